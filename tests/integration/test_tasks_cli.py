"""``edgeproxy tasks corpus | train | eval`` and ``policy explain``'s task line, as an SRE runs
them: end to end on files, and on the inputs that must be refused rather than crash or hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeproxy._core import TaskModel
from edgeproxy.cli import main
from edgeproxy.routing.classifier import evaluate, read_examples

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "policies/examples/tasks.yaml"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


def test_corpus_train_eval_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    code, out, _ = cli(
        capsys, "tasks", "corpus", "-o", str(data), "--train-per-task", "200",
        "--heldout-per-task", "50",
    )  # fmt: skip
    assert code == 0
    assert f"wrote {data / 'train.jsonl'}: 800 examples" in out
    model_path = tmp_path / "m.model"
    code, out, err = cli(
        capsys, "tasks", "train", str(data / "train.jsonl"), "-o", str(model_path), "--bits",
        "16", "--seed", "3",
    )  # fmt: skip
    assert code == 0, err
    assert "800 examples (chat 200, extraction 200, qa 200, writing 200)" in out
    assert "2^16 buckets, character 3-5-grams, word 1-2-grams, 10 epochs, seed 3" in out
    model = TaskModel.from_bytes(model_path.read_bytes())
    assert f"digest {model.digest}" in out
    assert model.labels == ["chat", "extraction", "qa", "writing"] and model.bits == 16
    code, out, _ = cli(
        capsys, "tasks", "eval", str(data / "heldout.jsonl"), "--model", str(model_path)
    )
    assert code == 0
    report = evaluate(model, read_examples(data / "heldout.jsonl"), 0.6)
    assert out.startswith(
        f"{data / 'heldout.jsonl'}: 200 examples, accuracy {report.accuracy:.1%} "
        f"({report.correct}/200)"
    )
    assert "confusion (rows: true task, columns: predicted)" in out
    assert "at min_confidence 0.6: " in out
    code, out, _ = cli(
        capsys, "tasks", "eval", str(data / "heldout.jsonl"), "--model", str(model_path),
        "--format", "json", "--min-confidence", "0.9",
    )  # fmt: skip
    parsed = json.loads(out)
    assert parsed["digest"] == model.digest
    assert parsed["accuracy"] == round(report.accuracy, 4)
    assert parsed["min_confidence"] == 0.9
    assert set(parsed["per_task"]) == {"chat", "extraction", "qa", "writing"}


def test_the_installed_command_runs(tmp_path: Path) -> None:
    examples = tmp_path / "e.jsonl"
    examples.write_text(
        '{"text": "what does it say", "task": "qa"}\n{"text": "draft", "task": "writing"}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "edgeproxy.cli", "tasks", "train", str(examples), "-o",
         str(tmp_path / "m"), "--bits", "8"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m").read_bytes()[:8] == b"\x89EPTASK\n"


@pytest.mark.parametrize(
    ("content", "args", "expected"),
    [
        (None, (), "cannot read"),
        ('{"text": "a", "task": "qa"}\nnope\n', (), ":2: not JSON"),
        ('{"text": "a", "task": "qa"}\n{"text": "b", "task": "qa"}\n', (), "2 to 64"),
        (
            '{"text": "a", "task": "qa"}\n{"text": "b", "task": "w"}\n{"text": "c", "task": "x"}',
            ("--bits", "24"),  # 3 tasks x 2^24 buckets x 2 bytes: 96 MiB
            "lower --bits",
        ),
        ('{"text": "a", "task": "qa"}\n{"text": "b", "task": "w"}\n', ("--bits", "4"), "bits"),
    ],
)
def test_train_refuses_unusable_input(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    args: tuple[str, ...],
    expected: str,
) -> None:
    examples = tmp_path / "e.jsonl"
    if content is not None:
        examples.write_text(content)
    code, _, err = cli(capsys, "tasks", "train", str(examples), "-o", str(tmp_path / "m"), *args)
    assert code == 2
    assert err.startswith("edgeproxy tasks train: ") and expected in err, err
    assert not (tmp_path / "m").exists()


def test_bad_ngram_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["tasks", "train", "x", "-o", "y", "--char-ngrams", "three"])
    assert caught.value.code == 2
    assert "write MIN-MAX" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["corrupt", "foreign", "directory", "fifo"])
def test_eval_refuses_a_model_that_is_not_one_without_hanging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    model = tmp_path / "m.model"
    shipped = (ROOT / "policies/examples/models/tasks.model").read_bytes()
    if kind == "corrupt":
        model.write_bytes(shipped[:100] + bytes([shipped[100] ^ 0xFF]) + shipped[101:])
    elif kind == "foreign":
        model.write_bytes((ROOT / EXAMPLE).read_bytes())
    elif kind == "directory":
        model.mkdir()
    else:
        os.mkfifo(model)
    code, _, err = cli(
        capsys, "tasks", "eval", "tests/fixtures/tasks/heldout.jsonl", "--model", str(model)
    )
    assert code == 2
    expected = {
        "corrupt": "checksum",
        "foreign": "not an edgeproxy task model",
        "directory": "a directory",
        "fifo": "a FIFO",
    }[kind]
    assert expected in err, err
    assert "version: 1" not in err  # a foreign file's content is never quoted


def _request(tmp_path: Path, body: dict[str, object]) -> str:
    path = tmp_path / "req.json"
    path.write_text(json.dumps(body))
    return str(path)


def test_explain_shows_the_task_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    json_out = _request(
        tmp_path,
        {
            "model": "assistant",
            "messages": [{"role": "user", "content": "the invoice"}],
            "response_format": {"type": "json_object"},
        },
    )
    code, out, _ = cli(capsys, "policy", "explain", EXAMPLE, "--request", json_out)
    assert code == 0
    assert "task: extraction (rules[0] (json-out))" in out.splitlines()
    spec = _request(
        tmp_path,
        {
            "model": "assistant",
            "messages": [
                {"role": "user", "content": "Draft a product spec for audit logs: goals, "
                 "non-goals, user stories and open questions."}
            ],
        },
    )  # fmt: skip
    code, out, _ = cli(capsys, "policy", "explain", EXAMPLE, "--request", spec, "--format", "json")
    task = json.loads(out)["task"]
    assert (task["task"], task["source"], task["label"]) == ("writing", "classifier", "writing")
    assert task["confidence"] >= 0.6 and task["why"].startswith("classifier: writing ")
    code, out, _ = cli(
        capsys, "policy", "explain", EXAMPLE, "--request", spec, "--header", "X-Edgeproxy-Task: qa"
    )
    assert "task: qa (header x-edgeproxy-task)" in out
    code, out, _ = cli(
        capsys,
        "policy",
        "explain",
        EXAMPLE,
        "--request",
        spec,
        "--header",
        "x-edgeproxy-task: nope",
    )
    assert code == 1  # the request would be refused
    assert "outcome: 400 unknown_task: x-edgeproxy-task names 'nope'" in out
    code, _, err = cli(
        capsys, "policy", "explain", EXAMPLE, "--request", spec, "--header", "no-colon"
    )
    assert code == 2 and "write NAME: VALUE" in err
