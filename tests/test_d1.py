"""D1 builders: real-layout fixtures through every reader, eq. 1 levels, splits, duplicates, bad rows."""

import json

import numpy as np
import pytest
from PIL import Image

from data_builders.common import BuildError, seeded_split, write_output
from data_builders.d1 import READERS, build_d1, get_reader, read_split_file
from qsit.records import iter_jsonl


def make_images(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        arr = (rng.random((12, 16, 3)) * 255).astype(np.uint8)  # distinct content per image
        Image.fromarray(arr).save(folder / name)


def koniq_layout(root, n=20):
    names = [f"{1000 + i}.jpg" for i in range(n)]
    make_images(root / "1024x768", names)
    lines = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore"]
    for i, name in enumerate(names):
        z = 5 + 90 * i / (n - 1)
        lines.append(f'"{name}",0,1,2,3,4,10,{1 + 4 * z / 100:.4f},0.5,{z:.4f}')
    (root / "koniq10k_scores_and_distributions.csv").write_text("\n".join(lines) + "\n")
    return names


def test_koniq_layout_to_records(tmp_path):
    koniq_layout(tmp_path)
    rows, problems = get_reader("koniq10k").read(tmp_path)
    assert len(rows) == 20 and not problems and rows[0].where.endswith("koniq10k_scores_and_distributions.csv:2")
    result = build_d1(rows, "koniq10k", tmp_path / "1024x768", seed=1)
    recs = result.records
    assert len(recs) == 20
    r = recs[0]
    assert r.kind == "scoring" and r.images == ("koniq10k/1000.jpg",)
    assert r.messages[0]["content"] == ("<image>\nAssume you are an image quality evaluator. "
                                        "How would you rate the quality of this image?")
    assert r.messages[1]["content"] == f"The quality of the image is {r.meta['level']}."
    splits = [x.split for x in recs]
    assert splits.count("test") == 4 and splits.count("val") == 2 and splits.count("train") == 14
    # eq. 1 on the training split's range: its min is bad, its max excellent.
    train = [x for x in recs if x.split == "train"]
    lo = min(train, key=lambda x: x.meta["mos"])
    hi = max(train, key=lambda x: x.meta["mos"])
    assert lo.meta["level"] == "bad" and hi.meta["level"] == "excellent"
    assert result.manifest["level_range"] == [lo.meta["mos"], hi.meta["mos"]]
    prec = result.manifest["conversion_precision"]
    assert prec["n"] == 14 and prec["srcc"] > 0.9 and prec["plcc"] > 0.9


def test_output_folder_has_jsonl_hf_copy_and_manifest(tmp_path):
    koniq_layout(tmp_path / "src")
    rows, _ = get_reader("koniq10k").read(tmp_path / "src")
    result = build_d1(rows, "koniq10k", tmp_path / "src" / "1024x768")
    out = write_output(tmp_path / "out", result.records, result.manifest)
    assert list(iter_jsonl(out / "records.jsonl")) == result.records
    import datasets

    ds = datasets.load_from_disk(str(out / "hf"))
    assert len(ds) == 20 and ds[0]["messages"][1]["role"] == "assistant"
    assert json.loads(ds[0]["meta"])["mos"] == result.records[0].meta["mos"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["kind"] == {"scoring": 20}
    assert sum(manifest["counts"]["level"].values()) == 20
    assert len(manifest["input_hashes"]) == 20 and manifest["builder_version"]


def test_bad_rows_are_reported_with_file_and_line(tmp_path):
    names = koniq_layout(tmp_path)
    csv_path = tmp_path / "koniq10k_scores_and_distributions.csv"
    text = csv_path.read_text()
    text += '"missing.jpg",0,0,0,0,0,0,3,0.5,50\n'      # line 22: no such image
    text += f'"{names[3]}",0,0,0,0,0,0,3,0.5,51\n'       # line 23: duplicate id
    text += f'"{names[4]}",0,0,0,0,0,0,3,0.5,nan\n'     # line 24: NaN
    make_images(tmp_path / "1024x768", ["extra.jpg"], seed=9)
    text += '"extra.jpg",0,0,0,0,0,0,3,0.5,130\n'        # line 25: out of the 0-100 scale
    (tmp_path / "1024x768" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    text += '"broken.jpg",0,0,0,0,0,0,3,0.5,40\n'        # line 26: unreadable file
    csv_path.write_text(text)
    reader = get_reader("koniq10k")
    rows, problems = reader.read(tmp_path)
    result = build_d1(rows, "koniq10k", tmp_path / "1024x768", nominal_range=reader.nominal_range,
                      problems=problems)
    lines = result.problems.lines()
    assert any(":24: score 'nan' is NaN" in x for x in lines)
    assert any(":22: image not found" in x for x in lines)
    assert any(":23: duplicate image" in x for x in lines)
    assert any(":25: score 130.0 outside the scale" in x for x in lines)
    assert any(":26: unreadable image:" in x and "broken.jpg" in x for x in lines)
    assert len(result.records) == 20


def test_duplicate_content_across_splits_is_refused(tmp_path):
    names = koniq_layout(tmp_path)
    folder = tmp_path / "1024x768"
    (folder / names[1]).write_bytes((folder / names[0]).read_bytes())
    rows, _ = get_reader("koniq10k").read(tmp_path)
    split = {n: "train" for n in names}
    split[names[1]] = "test"
    with pytest.raises(BuildError, match=f"koniq10k/{names[0]} = koniq10k/{names[1]} \\(across splits\\)"):
        build_d1(rows, "koniq10k", folder, split_of=split)
    # Across datasets: hashes from an earlier build's manifest.
    split[names[1]] = "train"
    first = build_d1(rows, "koniq10k", folder, split_of=split)
    with pytest.raises(BuildError, match="already in another dataset"):
        build_d1(rows, "copy", folder, split_of=split, known_hashes=first.manifest["input_hashes"])


def test_official_split_file(tmp_path):
    names = koniq_layout(tmp_path)
    sets = ["training"] * 14 + ["validation"] * 2 + ["test"] * 4
    (tmp_path / "koniq10k_distributions_sets.csv").write_text(
        "image_name,c1,set\n" + "".join(f"{n},1,{s}\n" for n, s in zip(names, sets, strict=True)))
    split = read_split_file(tmp_path / "koniq10k_distributions_sets.csv")
    rows, _ = get_reader("koniq10k").read(tmp_path)
    recs = build_d1(rows, "koniq10k", tmp_path / "1024x768", split_of=split).records
    assert [r.split for r in recs] == ["train"] * 14 + ["val"] * 2 + ["test"] * 4
    (tmp_path / "bad.json").write_text(json.dumps({names[0]: "dev"}))
    with pytest.raises(BuildError, match="unknown split names \\['dev'\\]"):
        read_split_file(tmp_path / "bad.json")


def test_score_range_override_and_paraphrases(tmp_path):
    koniq_layout(tmp_path)
    rows, _ = get_reader("koniq10k").read(tmp_path)
    recs = build_d1(rows, "koniq10k", tmp_path / "1024x768", score_range=(0, 100), paraphrases=True).records
    by_mos = {r.meta["mos"]: r.meta["level"] for r in recs}
    assert by_mos[5.0] == "bad" and by_mos[95.0] == "excellent"
    assert all(r.messages[0]["content"].startswith("<image>\nAssume you are an image quality evaluator. ")
               for r in recs)
    assert len({r.messages[0]["content"] for r in recs}) > 3


def test_spaq_livec_agiqa_kadid_qbench_layouts(tmp_path):
    import pandas as pd
    from scipy.io import savemat

    spaq = tmp_path / "spaq"
    make_images(spaq / "TestImage", ["00001.jpg", "00002.jpg", "00003.jpg"], seed=1)
    (spaq / "Annotations").mkdir()
    pd.DataFrame({"Image name": ["00001.jpg", "00002.jpg", "00003.jpg"], "MOS": [42.0, 77.5, 12.25],
                  "Brightness": [50, 60, 70]}).to_excel(spaq / "Annotations" / "MOS and Image attribute scores.xlsx",
                                                        index=False)
    livec = tmp_path / "livec"
    (livec / "Data").mkdir(parents=True)
    names = [f"t{i}.bmp" for i in range(7)] + ["10.JPG", "11.JPG", "12.JPG"]
    cells = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cells[i, 0] = np.array([n])
    savemat(livec / "Data" / "AllImages_release.mat", {"AllImages_release": cells})
    savemat(livec / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[50.0] * 7 + [63.2, 20.5, 81.0]])})
    agiqa = tmp_path / "agiqa"
    agiqa.mkdir()
    (agiqa / "data.csv").write_text("name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align\n"
                                    "AttnGAN_normal_000.jpg,a cat,,,photo,1.36,0.5,2.2,0.4\n"
                                    "midjourney_normal_001.png,a dog,,,photo,3.9,0.3,4.1,0.2\n")
    kadid = tmp_path / "kadid"
    kadid.mkdir()
    (kadid / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.496\n"
                                    "I01_01_05.png,I01.png,2.03,0.8\n")
    qbench = tmp_path / "a3.json"
    qbench.write_text(json.dumps([{"img_path": "x.jpg", "gt_score": 3.2}, {"img_path": "y.jpg", "gt_score": 1.1}]))

    got = {
        "spaq": READERS["spaq"].read(spaq)[0],
        "livec": READERS["livec"].read(livec)[0],
        "agiqa3k": READERS["agiqa3k"].read(agiqa)[0],
        "kadid10k": READERS["kadid10k"].read(kadid)[0],
        "qbench-a3": READERS["qbench-a3"].read(qbench)[0],
    }
    assert [(r.image, r.mos) for r in got["spaq"]] == [("00001.jpg", 42.0), ("00002.jpg", 77.5), ("00003.jpg", 12.25)]
    assert [(r.image, r.mos) for r in got["livec"]] == [("10.JPG", 63.2), ("11.JPG", 20.5), ("12.JPG", 81.0)]
    assert [r.image for r in got["agiqa3k"]] == ["AttnGAN_normal_000.jpg", "midjourney_normal_001.png"]
    assert [r.mos for r in got["kadid10k"]] == [4.57, 2.03]
    assert [(r.image, r.mos) for r in got["qbench-a3"]] == [("x.jpg", 3.2), ("y.jpg", 1.1)]
    recs = build_d1(got["spaq"], "spaq", spaq / "TestImage", test_fraction=0, val_fraction=0).records
    assert sorted(r.meta["level"] for r in recs) == ["bad", "excellent", "fair"]


def test_unknown_reader_and_missing_columns(tmp_path):
    with pytest.raises(BuildError, match="Did you mean koniq10k"):
        get_reader("konik10k")
    (tmp_path / "data.csv").write_text("file,score\na.jpg,3\n")
    with pytest.raises(BuildError, match="no column\\(s\\) \\['name', 'mos_quality'\\]"):
        READERS["agiqa3k"].read(tmp_path)


def test_seeded_split_is_order_independent():
    keys = [f"k{i}" for i in range(50)]
    a = seeded_split(keys, 0.2, 0.1, seed=3)
    b = seeded_split(list(reversed(keys)), 0.2, 0.1, seed=3)
    assert a == b and list(a.values()).count("test") == 10
    assert seeded_split(keys, 0.2, 0.1, seed=4) != a
