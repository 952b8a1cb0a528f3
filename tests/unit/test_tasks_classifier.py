"""The task classifier's training data, training, evaluation and corpus.

The accuracy floor below is measured on templates training never saw (``corpus.py``): it fails
when a change to features or training makes the classifier worse at generalising, not merely
different.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest

from edgeproxy._core import TaskError, TaskModel
from edgeproxy.policy import load_policy
from edgeproxy.routing import corpus
from edgeproxy.routing.classifier import (
    Example,
    ExamplesError,
    TrainSettings,
    evaluate,
    parse_examples,
    read_examples,
    render_report,
    train,
    write_model,
)
from edgeproxy.routing.tasks import classifier_text

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "tasks"


def _lines(*items: object) -> list[bytes]:
    return [item if isinstance(item, bytes) else orjson.dumps(item) for item in items]


def test_examples_are_text_or_messages_read_as_the_request_path_reads_them() -> None:
    messages = [
        {"role": "system", "content": "Output JSON."},
        {"role": "user", "content": "extract the date"},
        {"role": "assistant", "content": "not read"},
    ]
    examples = parse_examples(
        _lines(
            {"text": "what does it say?", "task": "qa", "extra": 1},
            b"   ",
            {"messages": messages, "task": "extraction"},
        ),
        "x.jsonl",
    )
    assert examples == [
        Example("what does it say?", "qa", 1),
        Example(classifier_text(messages), "extraction", 3),
    ]
    assert examples[1].text == "Output JSON.\nextract the date"


def test_bad_lines_are_reported_with_their_line_numbers() -> None:
    with pytest.raises(ExamplesError) as caught:
        parse_examples(
            _lines(
                {"text": "ok", "task": "qa"},
                b"{not json",
                ["a list"],
                {"text": "x", "task": "has space"},
                {"text": 3, "task": "qa"},
                {"task": "qa"},
            ),
            "x.jsonl",
        )
    problems = caught.value.problems
    assert [p.split(": ", 1)[0] for p in problems] == [f"x.jsonl:{n}" for n in range(2, 7)]
    assert "not JSON" in problems[0]
    assert "not a JSON object" in problems[1]
    assert '"task" must be a task name' in problems[2]
    assert 'needs "text"' in problems[3] and 'needs "text"' in problems[4]


def test_an_empty_file_and_a_file_of_garbage_are_refused_boundedly() -> None:
    with pytest.raises(ExamplesError, match="no examples"):
        parse_examples([b"", b"\n"], "empty.jsonl")
    with pytest.raises(ExamplesError) as caught:
        parse_examples([b"garbage"] * 1000, "junk.jsonl")
    assert len(caught.value.problems) == 21  # twenty listed, then a count
    assert caught.value.problems[-1] == "... and 980 more"


def test_training_refuses_a_single_task() -> None:
    with pytest.raises(TaskError, match="2 to 64"):
        train([Example("a", "qa", 1), Example("b", "qa", 2)], TrainSettings(bits=8))


def test_evaluation_counts_by_hand() -> None:
    model = train(
        [
            Example("what does the contract say", "qa", 1),
            Example("according to the document, who", "qa", 2),
            Example("draft a product spec", "writing", 3),
            Example("write a launch blog post", "writing", 4),
        ],
        TrainSettings(bits=10, epochs=30),
    )
    held = [
        Example("what does the contract say", "qa", 1),
        Example("draft a product spec", "writing", 2),
        Example("write a launch blog post", "writing", 3),
        Example("what does the contract say", "writing", 4),  # mislabelled on purpose
        Example("tell me a joke", "chat", 5),  # a task the model lacks
    ]
    predicted = [model.predict(e.text)[0] for e in held]
    assert predicted[:4] == ["qa", "writing", "writing", "qa"]
    report = evaluate(model, held, min_confidence=0.0)
    assert (report.total, report.correct) == (5, 3)
    assert report.accuracy == pytest.approx(0.6)
    stats = {s.task: s for s in report.per_class()}
    assert (stats["qa"].support, stats["qa"].predicted, stats["qa"].correct) == (1, 2, 1)
    assert stats["qa"].precision == pytest.approx(0.5) and stats["qa"].recall == 1.0
    assert (stats["writing"].support, stats["writing"].correct) == (3, 2)
    assert stats["writing"].recall == pytest.approx(2 / 3)
    assert stats["chat"].support == 1 and stats["chat"].recall == 0.0
    assert report.unknown == {"chat": 1}
    assert report.confusion[("writing", "qa")] == 1
    assert report.decided == 5 and report.decided_correct == 3
    text = render_report(report, "held.jsonl")
    assert "held.jsonl: 5 examples, accuracy 60.0% (3/5)" in text
    assert "tasks the model does not know (always wrong): chat (1)" in text
    data = report.as_dict()
    assert data["confusion"]["writing"] == {"qa": 1, "writing": 2, "chat": 0}
    assert evaluate(model, held, min_confidence=1.0).decided == 0


def test_a_model_is_written_atomically_and_reads_back(tmp_path: Path) -> None:
    model = train([Example("what", "qa", 1), Example("draft", "writing", 2)], TrainSettings(bits=8))
    path = tmp_path / "sub" / "tasks.model"
    size = write_model(model, path)
    assert size == path.stat().st_size
    assert TaskModel.from_bytes(path.read_bytes()).digest == model.digest
    assert [p.name for p in path.parent.iterdir()] == ["tasks.model"]  # no temporary left


# -- the corpus and the model trained on it --------------------------------------------------


def test_the_corpus_is_deterministic_and_the_shipped_files_are_its_output() -> None:
    for split, per_task in (("train", 750), ("heldout", 250)):
        lines = [orjson.dumps(e) for e in corpus.examples(split, per_task, seed=0)]
        shipped = (FIXTURES / f"{split}.jsonl").read_bytes()
        assert b"\n".join(lines) + b"\n" == shipped, (
            f"regenerate: edgeproxy tasks corpus -o {FIXTURES}"
        )
    again = list(itertools.islice(corpus.examples("train", 10, seed=1), 40))
    assert again == list(itertools.islice(corpus.examples("train", 10, seed=1), 40))
    assert again != list(itertools.islice(corpus.examples("train", 10, seed=2), 40))


def test_held_out_templates_are_never_trained_on() -> None:
    train_templates = {e["template"] for e in corpus.examples("train", 300)}
    heldout_templates = {e["template"] for e in corpus.examples("heldout", 300)}
    assert train_templates and heldout_templates
    assert not train_templates & heldout_templates
    for task in corpus.TASKS:  # every task is in both splits
        assert any(t.startswith(f"{task}/") for t in heldout_templates)
        assert any(t.startswith(f"{task}/") for t in train_templates)
    with pytest.raises(ValueError, match="split"):
        next(corpus.examples("test", 1))


@pytest.fixture(scope="module")
def trained() -> TaskModel:
    return train(read_examples(FIXTURES / "train.jsonl"), TrainSettings())


def test_training_is_deterministic(trained: TaskModel) -> None:
    again = train(read_examples(FIXTURES / "train.jsonl"), TrainSettings())
    assert again.to_bytes() == trained.to_bytes()
    other = train(read_examples(FIXTURES / "train.jsonl"), TrainSettings(seed=1))
    assert other.digest != trained.digest


def test_held_out_accuracy_stays_above_its_floor(trained: TaskModel) -> None:
    held = read_examples(FIXTURES / "heldout.jsonl")
    report = evaluate(trained, held, min_confidence=0.6)
    # Measured 87% (docs/benchmarks.md); at 0.6 two thirds are decided, ~99% of them right.
    assert report.accuracy >= 0.82, render_report(report, "heldout")
    assert report.decided / report.total >= 0.5
    assert report.decided_correct / report.decided >= 0.95
    assert all(s.recall >= 0.6 for s in report.per_class())


def test_the_example_policys_model_matches_its_categories() -> None:
    policy = load_policy(
        ROOT / "policies" / "examples" / "tasks.yaml",
        environ={"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"},
    )
    classifier = policy.tasks.classifier
    assert classifier is not None
    assert set(classifier.model.labels) == set(policy.tasks.categories)
    held = read_examples(FIXTURES / "heldout.jsonl")
    assert evaluate(classifier.model, held, 0.6).accuracy >= 0.82


def test_a_long_prompt_is_read_as_its_head_and_tail(trained: TaskModel) -> None:
    # 40 KB: scored with the GIL released, and only its first and last max_bytes / 2 count, so
    # the cost is bounded whatever the prompt's length.
    head = "Extract the invoice number and total as JSON. " * 100
    tail = " Return only the JSON object." * 150
    a = head + "lorem ipsum " * 3000 + tail
    b = head + "the quarterly plan " * 2000 + tail
    assert len(a.encode()) > 40_000 and len(b.encode()) > 40_000
    assert trained.probabilities(a) == trained.probabilities(b)
    # Both halves kept are wholly inside head and tail: the middle never counted.
    assert trained.probabilities(a) == trained.probabilities(head + tail)
    assert trained.probabilities(a) != trained.probabilities(head)
