"""The ``qsit`` command, run as a user runs it: bad input never gives a traceback or loses work."""

import csv
import html as html_lib
import json
import subprocess
import sys

import numpy as np
import pytest

from qsit.cli import SCORE_COLUMNS, main
from qsit.levels import LEVELS


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_assess_json_report_is_consistent(capsys, tiny_checkpoint, photo):
    code, out, err = run(capsys, "assess", photo, "--model", tiny_checkpoint, "--format", "json",
                         "--max-new-tokens", "5")
    assert code == 0, err
    (report,) = json.loads(out)
    p = np.array([report["probabilities"][w] for w in LEVELS])
    assert p.sum() == pytest.approx(1.0, abs=1e-6)
    assert report["score"] == pytest.approx(float(p @ np.arange(1, 6)), abs=1e-6)
    assert report["image"] == str(photo) and report["model"] == tiny_checkpoint
    assert isinstance(report["explanation"], str) and report["prompt_version"] == "qsit-1"


def test_assess_html_and_markdown(capsys, tmp_path, tiny_checkpoint, photo):
    out_html = tmp_path / "r.html"
    code, _, _ = run(capsys, "assess", photo, "--model", tiny_checkpoint, "--format", "html", "--out", out_html,
                     "--max-new-tokens", "3")
    html = out_html.read_text()
    from qsit.assessor import Assessor

    want = Assessor.from_pretrained(tiny_checkpoint).assess(photo, max_new_tokens=3)
    assert code == 0 and "data:image/jpeg;base64," in html and "<svg" in html
    assert f"{want.score:.3f}" in html and html_lib.escape(want.explanation) in html
    code, out, _ = run(capsys, "assess", photo, "--model", tiny_checkpoint, "--max-new-tokens", "3")
    assert code == 0 and out.startswith(f"## {photo}")
    assert f"**Score:** {want.score:.3f} on 1..5 (**{want.level}**)" in out and want.explanation in out
    for level, p in want.probabilities.items():
        assert f"| {level} | {p:.3f} |" in out


def test_missing_model_is_a_one_line_error(capsys, monkeypatch, tmp_path, photo):
    monkeypatch.delenv("QSIT_MODEL", raising=False)
    monkeypatch.setattr("qsit.assessor.DEFAULT_MODEL_DIR", tmp_path / "absent")
    code, _, err = run(capsys, "assess", photo)
    assert code == 2
    assert err.strip().count("\n") == 0 and "--model" in err and "QSIT_MODEL" in err


def test_unloadable_model_is_a_clean_error(capsys, tmp_path, photo):
    code, _, err = run(capsys, "assess", photo, "--model", tmp_path / "nothing-here")
    assert code == 2 and "cannot load model" in err


@pytest.mark.parametrize(
    "key, message",
    [
        ("missing", "no such file or directory"),
        ("empty", "empty file"),
        ("text", "not a recognised image format"),
        ("truncated", "truncated or corrupt"),
        ("bomb", "decompression bomb"),
    ],
)
def test_assess_bad_input(capsys, tiny_checkpoint, bad_images, photo, key, message):
    code, out, err = run(capsys, "assess", bad_images[key], photo, "--model", tiny_checkpoint,
                         "--format", "json", "--max-new-tokens", "2")
    assert code == 1 and message in err
    assert [r["image"] for r in json.loads(out)] == [str(photo)]  # the good image is still assessed


def test_assess_empty_directory(capsys, tmp_path, tiny_checkpoint):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "assess", tmp_path / "empty", "--model", tiny_checkpoint)
    assert code == 2 and "directory has no images" in err and "no images to assess" in err


def test_assess_awkward_images_with_notes(capsys, tiny_checkpoint, odd_images):
    code, out, err = run(capsys, "assess", *odd_images.values(), "--model", tiny_checkpoint,
                         "--format", "json", "--max-new-tokens", "2")
    assert code == 0, err
    reports = {r["image"]: r for r in json.loads(out)}
    assert set(reports) == {str(p) for p in odd_images.values()}
    assert "first of 3 frames" in " ".join(reports[str(odd_images["gif"])]["notes"])
    assert "note:" in err and "EXIF orientation 6" in err


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_score_csv_resumes_and_records_bad_images(capsys, tmp_path, tiny_checkpoint, odd_images, bad_images):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for key in ("cmyk", "alpha", "exif"):
        (folder / odd_images[key].name).write_bytes(odd_images[key].read_bytes())
    (folder / "broken.jpg").write_bytes(bad_images["truncated"].read_bytes())
    out = tmp_path / "scores.csv"

    code, _, err = run(capsys, "score", folder, "--model", tiny_checkpoint, "--out", out, "--batch-size", "2")
    assert code == 1 and "1 unreadable" in err
    rows = read_rows(out)
    assert list(rows[0]) == SCORE_COLUMNS and len(rows) == 4
    broken = next(r for r in rows if r["path"].endswith("broken.jpg"))
    assert "truncated or corrupt" in broken["error"] and broken["score"] == ""
    good = [r for r in rows if not r["error"]]
    for r in good:
        assert sum(float(r[f"p_{w}"]) for w in LEVELS) == pytest.approx(1.0, abs=1e-5)

    # New image added: a rerun scores only that one and keeps the old rows untouched.
    (folder / "palette.png").write_bytes(odd_images["palette"].read_bytes())
    code, _, err = run(capsys, "score", folder, "--model", tiny_checkpoint, "--out", out)
    assert "4 of 5 images already" in err
    rows2 = read_rows(out)
    assert rows2[:4] == rows and len(rows2) == 5 and rows2[4]["path"].endswith("palette.png")

    # Nothing new: said plainly, with the way to retry the error row.
    code, _, err = run(capsys, "score", folder, "--model", tiny_checkpoint, "--out", out)
    assert code == 0 and "nothing to score" in err and "--retry-errors" in err and "scoring" not in err
    assert read_rows(out) == rows2
    # The broken file is fixed: --retry-errors scores it again and keeps every other row.
    (folder / "broken.jpg").write_bytes(odd_images["exif"].read_bytes())
    code, _, err = run(capsys, "score", folder, "--model", tiny_checkpoint, "--out", out, "--retry-errors")
    assert code == 0 and "retrying 1 image" in err
    rows3 = read_rows(out)
    fixed = next(r for r in rows3 if r["path"].endswith("broken.jpg"))
    assert fixed["error"] == "" and 1 <= float(fixed["score"]) <= 5
    assert [r for r in rows3 if r is not fixed] == [r for r in rows2 if not r["error"]]


def test_score_refuses_to_append_to_a_foreign_csv(capsys, tmp_path, tiny_checkpoint, photo):
    out = tmp_path / "other.csv"
    out.write_text("a,b\n1,2\n")
    code, _, err = run(capsys, "score", photo, "--model", tiny_checkpoint, "--out", out)
    assert code == 2 and "not a qsit scores file" in err
    assert out.read_text() == "a,b\n1,2\n"


def test_score_with_views_writes_the_view_mean_and_says_so(capsys, tmp_path, tiny_checkpoint, photo):
    from qsit.assessor import Assessor

    out = tmp_path / "views.csv"
    code, _, _ = run(capsys, "score", photo, "--model", tiny_checkpoint, "--out", out, "--views", "2")
    [row] = list(csv.DictReader(out.open()))
    assert code == 0 and "mean of 2 views" in row["notes"]
    want = Assessor.from_pretrained(tiny_checkpoint).score([photo], views=2)[0].score
    assert float(row["score"]) == pytest.approx(want, abs=1e-5)
    with pytest.raises(SystemExit):
        main(["score", str(photo), "--out", str(tmp_path / "x.csv"), "--views", "5"])
    # Adding single-view scores to a file of two-view ones would mix two kinds of number.
    before = out.read_text()
    code, _, err = run(capsys, "score", photo, tmp_path, "--model", tiny_checkpoint, "--out", out)
    assert code == 2 and "--views 2" in err and out.read_text() == before


def test_misspelled_flags_are_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["score", "x.jpg", "--out", "s.csv", "--batchsize", "4"])
    assert e.value.code == 2
    assert "unrecognized arguments: --batchsize" in capsys.readouterr().err


def test_console_script_runs(tiny_checkpoint, photo):
    proc = subprocess.run(
        [sys.executable, "-m", "qsit.cli", "assess", str(photo), "--model", tiny_checkpoint,
         "--format", "json", "--max-new-tokens", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["level"] in LEVELS
