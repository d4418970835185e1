"""``qsit eval ...`` through the real CLI."""

import json
import socket

from qsit.cli import main
from tests.test_evals import tiny_bench  # noqa: F401  (fixture)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_eval_report_with_ground_truth(capsys, tiny_checkpoint, tiny_bench):  # noqa: F811
    out = tiny_bench / "report.html"
    code, _, err = run(capsys, "eval", "report", tiny_bench, "--model", tiny_checkpoint, "--out", out,
                       "--gt", tiny_bench / "iqa.json", "--max-new-tokens", "2")
    assert code == 0, err
    html = out.read_text()
    assert html.count("data:image/png;base64,") == 2  # histogram and scatter
    assert "Against ground truth (6 of 6 images): SRCC" in html and html.count('class="item"') == 6
    code, _, _ = run(capsys, "eval", "report", tiny_bench, "--model", tiny_checkpoint, "--out", out,
                     "--format", "json", "--gt", tiny_bench / "iqa.json", "--max-new-tokens", "2")
    data = json.loads(out.read_text())
    assert data["summary"]["ground_truth"]["matched"] == 6 and "srcc" in data["summary"]["ground_truth"]
    assert sum(data["summary"]["levels"].values()) == 6


def test_eval_iqa_and_llvisionqa_cli(capsys, tiny_checkpoint, tiny_bench):  # noqa: F811
    code, out, err = run(capsys, "eval", "iqa", "--set", f"mini={tiny_bench / 'iqa.json'}", "--model",
                         tiny_checkpoint, "--out", tiny_bench / "o", "--trained-on", "mini")
    assert code == 0, err
    assert out.startswith("| model | mini | avg |")  # no † on a set the model was trained on
    code, out, err = run(capsys, "eval", "llvisionqa", tiny_bench / "llvisionqa.json", "--model", tiny_checkpoint,
                         "--out", tiny_bench / "o", "--mode", "likelihood", "--export-lmms-eval",
                         tiny_bench / "lmms.jsonl")
    assert code == 0, err
    assert "| likelihood of the letter |" in out and len((tiny_bench / "lmms.jsonl").read_text().splitlines()) == 6
    code, out, err = run(capsys, "eval", "llvisionqa", tiny_bench / "llvisionqa.json", "--model", tiny_checkpoint,
                         "--out", tiny_bench / "o", "--mode", "likelihood", "--likelihood-of", "answer")
    assert code == 0, err
    assert "| likelihood of the answer |" in out
    code, out, _ = run(capsys, "eval", "llvisionqa", tiny_bench / "llvisionqa.json", "--compare-lmms-eval",
                       tiny_bench / "lmms.jsonl", "--out", tiny_bench / "o")
    assert code == 0 and json.loads(out)["n"] == 6


def test_eval_set_syntax_and_unreachable_judge(capsys, tiny_checkpoint, tiny_bench):  # noqa: F811
    code, _, err = run(capsys, "eval", "iqa", "--set", "no-equals-sign", "--model", tiny_checkpoint,
                       "--out", tiny_bench / "o")
    assert code == 2 and "NAME=PATH" in err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(capsys, "eval", "lldescribe", tiny_bench / "lldescribe.json", "--model", tiny_checkpoint,
                       "--judge-base-url", f"http://127.0.0.1:{port}/v1", "--judge-model", "j",
                       "--out", tiny_bench / "o", "--max-new-tokens", "2", "--rounds", "1")
    assert code == 2 and "cannot reach the LLM endpoint" in err
    # The descriptions made before the judge failed are kept for the rerun.
    assert (tiny_bench / "o" / "lldescribe_cache.jsonl").read_text().count("desc") == 2
