"""``qsit build ...`` through the real CLI: outputs, summaries, and clean errors."""

import json
import socket

from qsit.cli import main
from qsit.records import iter_jsonl
from tests.llm_server import ScriptedLLM
from tests.test_d1 import koniq_layout


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_build_d1_koniq(capsys, tmp_path):
    koniq_layout(tmp_path / "koniq")
    code, _, err = run(capsys, "build", "d1", "koniq10k", tmp_path / "koniq", "--out", tmp_path / "d1")
    assert code == 0, err
    assert "wrote 20 records" in err and "conversion precision SRCC" in err
    manifest = json.loads((tmp_path / "d1" / "manifest.json").read_text())
    assert manifest["args"]["dataset"] == "koniq10k" and manifest["counts"]["total"] == 20
    # The same images again under another name are refused against the first build.
    code, _, err = run(capsys, "build", "d1", "koniq10k", tmp_path / "koniq", "--source", "copy",
                       "--out", tmp_path / "d1b", "--against", tmp_path / "d1")
    assert code == 2 and "already in another dataset" in err


def test_build_d1_generic_table_needs_columns(capsys, tmp_path):
    (tmp_path / "t.csv").write_text("file,score\na.png,1\n")
    code, _, err = run(capsys, "build", "d1", "table", tmp_path / "t.csv", "--out", tmp_path / "o")
    assert code == 2 and "--image-column and --score-column" in err


def test_build_d2_from_feedback_with_a_loopback_llm(capsys, tmp_path):
    fb = tmp_path / "feedback.jsonl"
    fb.write_text("\n".join(json.dumps(x) for x in [
        {"image": "a.jpg", "feedback": "[ok] Blurry and dark. Overall, the quality is poor."},
        {"image": "b.jpg", "feedback": "[500] Sharp and bright. Overall, the quality is good."},
        {"image": "c.jpg", "feedback": "[ok] Noisy sky. Overall, the quality is fair."},
    ]) + "\n")
    with ScriptedLLM() as llm:
        code, _, err = run(capsys, "build", "d2", "--feedback", fb, "--base-url", llm.base_url, "--model", "m",
                           "--out", tmp_path / "d2", "--image-prefix", "mine", "--mcq-answers", "words")
    assert code == 0, err
    manifest = json.loads((tmp_path / "d2" / "manifest.json").read_text())
    assert manifest["failed"] == ["b"] and any("LLM generation failed" in p["problem"] for p in manifest["problems"])
    records = list(iter_jsonl(tmp_path / "d2" / "records.jsonl"))
    assert {r.images[0] for r in records} == {"mine/a.jpg", "mine/c.jpg"}
    mcq = [r for r in records if r.meta.get("task") == "mcq"]
    assert mcq and all(f"\n{r.meta['correct']}. {r.messages[1]['content']}\n" in r.messages[0]["content"] for r in mcq)
    assert (tmp_path / "d2" / "llm_cache").is_dir()


def test_build_d2_unreachable_llm_is_one_line(capsys, tmp_path):
    fb = tmp_path / "fb.json"
    fb.write_text(json.dumps([{"image": "a.jpg", "feedback": "Fine."}]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(capsys, "build", "d2", "--feedback", fb, "--base-url", f"http://127.0.0.1:{port}/v1",
                       "--model", "m", "--out", tmp_path / "d2")
    assert code == 2 and "cannot reach the LLM endpoint" in err
    code, _, err = run(capsys, "build", "d2", "--feedback", fb, "--out", tmp_path / "d2")
    assert code == 2 and "needs an LLM endpoint" in err


def test_build_synthetic_small(capsys, tmp_path):
    code, _, err = run(capsys, "build", "synthetic", "--out", tmp_path / "syn", "--size", "40",
                       "--crops-per-photo", "1", "--ladders-per-crop", "1", "--train-scenes", "1",
                       "--test-scenes", "1", "--mcq-answers", "words", "--severity-words", "level")
    assert code == 0, err
    assert "D1 conversion precision SRCC" in err
    manifest = json.loads((tmp_path / "syn" / "manifest.json").read_text())
    assert manifest["config"]["mcq_answers"] == "words" and manifest["config"]["severity_words"] == "level"
    for sub in ("d1", "d2", "d3"):
        assert (tmp_path / "syn" / sub / "manifest.json").is_file()
    assert json.loads((tmp_path / "syn" / "tests" / "iqa.json").read_text())
    mcq = [r for r in (json.loads(line) for line in (tmp_path / "syn" / "d2" / "records.jsonl").open())
           if r["meta"]["task"] == "mcq"]
    assert mcq and all(f"\n{r['meta']['correct']}. {r['messages'][1]['content']}\n" in r["messages"][0]["content"]
                       for r in mcq)  # answered by the option's words, the option the letter marks
