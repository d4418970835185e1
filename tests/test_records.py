"""The one record schema: validation with named problems, JSONL round trip, LLaVA-NeXT interop."""

import json

import pytest

from qsit.records import Record, RecordError, from_llava, iter_jsonl, to_llava, write_jsonl

GOOD = {
    "id": "koniq10k/10004473376.jpg", "kind": "scoring", "images": ["koniq10k/1024x768/10004473376.jpg"],
    "messages": [
        {"role": "user", "content": "<image>\nAssume you are an image quality evaluator. "
                                    "How would you rate the quality of this image?"},
        {"role": "assistant", "content": "The quality of the image is good."},
    ],
    "source": "koniq10k", "split": "train", "meta": {"mos": 77.38},
}


def test_round_trip_through_jsonl(tmp_path):
    r = Record.from_dict(GOOD)
    path = tmp_path / "d1.jsonl"
    assert write_jsonl([r, r], path) == 2
    back = list(iter_jsonl(path))
    assert back == [r, r] and back[0].to_dict() == GOOD


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": "scoring-ish"}, "kind 'scoring-ish' is not one of"),
        ({"split": "dev"}, "split 'dev'"),
        ({"images": []}, "1 <image> marker"),
        ({"messages": []}, "no messages"),
        ({"messages": [GOOD["messages"][1], GOOD["messages"][0]]}, "should be from 'user'"),
        ({"messages": [GOOD["messages"][0]]}, "last message must be the assistant"),
        ({"messages": [GOOD["messages"][0], {"role": "assistant", "content": "  "}]}, "empty content"),
        ({"colour": "red"}, "unknown fields \\['colour'\\]"),
    ],
)
def test_schema_problems_are_named(change, message):
    with pytest.raises(RecordError, match=message):
        Record.from_dict({**GOOD, **change}, where="d1.jsonl:7")


def test_bad_lines_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2: not valid JSON"):
        list(iter_jsonl(path))
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "kind": "x"}) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2: record .* kind 'x'"):
        list(iter_jsonl(path))


def test_llava_next_format_matches_qsit_training_json():
    # An item of Q-SiT's published train_koniq_qsit.json.
    item = {
        "id": "10004473376.jpg->77.3836206897", "image": "koniq/10004473376.jpg",
        "conversations": [
            {"from": "human", "value": "Assume you are an image quality evaluator. "
                                       "How would you rate the quality of this image?\n<image>"},
            {"from": "gpt", "value": "The quality of the image is excellent."},
        ],
    }
    r = from_llava(item, kind="scoring", source="koniq10k")
    assert r.images == ("koniq/10004473376.jpg",) and r.messages[1]["content"].endswith("excellent.")
    assert to_llava(r) == item
    with pytest.raises(RecordError, match="not a LLaVA conversation item"):
        from_llava({"id": "x"}, kind="scoring", source="s")
