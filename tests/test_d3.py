"""D3: LLaVA-Instruct-150K items → general records; missing images reported, seeded sampling."""

import json

import pytest
from PIL import Image

from data_builders.common import BuildError
from data_builders.d3 import build_d3, sample_indices


def llava_instruct(tmp_path, n=10):
    coco = tmp_path / "train2017"
    coco.mkdir()
    items = []
    for i in range(n):
        name = f"{i:012d}.jpg"
        if i != 3:  # one image missing on disk
            Image.new("RGB", (8, 8), (i, 0, 0)).save(coco / name)
        items.append({"id": f"{i:012d}", "image": name, "conversations": [
            {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."}]})
    items[5]["conversations"] = items[5]["conversations"][:1]  # malformed: ends with the user
    path = tmp_path / "llava_instruct_150k.json"
    path.write_text(json.dumps(items))
    return path, coco


def test_items_become_general_records(tmp_path):
    path, coco = llava_instruct(tmp_path)
    result = build_d3(path, coco)
    assert len(result.records) == 8
    r = result.records[0]
    assert r.kind == "general" and r.id == "llava_instruct/000000000000"
    assert r.images == ("coco/000000000000.jpg",) and len(r.messages) == 4
    assert r.messages[2] == {"role": "user", "content": "What feature can be seen on the back of the bus?"}
    lines = result.problems.lines()
    assert any("item 3: image not found" in x for x in lines)
    assert any("item 5:" in x and "assistant" in x for x in lines)


def test_sampling_is_seeded():
    assert sample_indices(100, 0.1, None, seed=1) == sample_indices(100, 0.1, None, seed=1)
    assert len(sample_indices(100, None, 7, seed=1)) == 7
    with pytest.raises(BuildError, match="not both"):
        sample_indices(100, 0.1, 5, 0)
    with pytest.raises(BuildError, match="source has 100"):
        sample_indices(100, None, 101, 0)


def test_bad_json_is_named(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("[{")
    with pytest.raises(BuildError, match="x.json: not valid JSON"):
        build_d3(p, tmp_path)
