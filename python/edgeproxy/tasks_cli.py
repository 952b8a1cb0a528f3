"""``edgeproxy tasks train | eval | corpus``: the task classifier's tools (docs/tasks.md).

Exit codes: 0 done; 2 an input cannot be used (an examples file that is not JSON Lines of
labelled prompts, a model file that is not a model, settings the trainer refuses).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from edgeproxy._core import TaskError, TaskModel
from edgeproxy.policy.files import FileRefused
from edgeproxy.policy.tasks import MAX_MODEL_BYTES, read_task_model
from edgeproxy.routing.classifier import (
    Example,
    ExamplesError,
    TrainSettings,
    evaluate,
    read_examples,
    render_report,
    train,
    write_model,
)
from edgeproxy.snapshot import DEFAULT_MIN_CONFIDENCE


def _fail(command: str, message: str) -> int:
    print(f"edgeproxy tasks {command}: {message}", file=sys.stderr)
    return 2


def _examples(command: str, path: str) -> list[Example] | int:
    try:
        return read_examples(Path(path))
    except OSError as exc:
        return _fail(command, f"cannot read {path}: {exc.strerror or exc}")
    except ExamplesError as exc:
        return _fail(command, f"{path} is not usable:\n  " + "\n  ".join(exc.problems))


def _ngrams(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"write MIN-MAX (e.g. 3-5) or 0-0, got {text!r}") from None


def cmd_train(args: argparse.Namespace) -> int:
    examples = _examples("train", args.examples)
    if isinstance(examples, int):
        return examples
    settings = TrainSettings(
        bits=args.bits,
        char_ngrams=args.char_ngrams,
        word_ngrams=args.word_ngrams,
        max_bytes=args.max_bytes,
        epochs=args.epochs,
        seed=args.seed,
        learning_rate=args.learning_rate,
    )
    counts = Counter(e.task for e in examples)
    size = settings.model_bytes(len(counts))
    if size > MAX_MODEL_BYTES:
        return _fail(
            "train",
            f"a model of {len(counts)} tasks with --bits {args.bits} would be "
            f"{size / 2**20:.0f} MiB, over the {MAX_MODEL_BYTES // 2**20} MiB a policy loads: "
            "lower --bits",
        )
    shown = ", ".join(f"{task} {n}" for task, n in sorted(counts.items()))
    print(f"{args.examples}: {len(examples)} examples ({shown})")
    started = time.perf_counter()
    try:
        model = train(examples, settings)
    except TaskError as exc:
        return _fail("train", str(exc))
    took = time.perf_counter() - started
    right = sum(model.predict(e.text)[0] == e.task for e in examples)
    try:
        written = write_model(model, Path(args.output))
    except OSError as exc:
        return _fail("train", f"cannot write {args.output}: {exc.strerror or exc}")
    print(
        f"trained in {took:.2f}s: 2^{settings.bits} buckets, character {settings.char_ngrams[0]}-"
        f"{settings.char_ngrams[1]}-grams, word 1-{settings.word_ngrams}-grams, "
        f"{settings.epochs} epochs, seed {settings.seed}"
    )
    print(f"training accuracy {right / len(examples):.1%} (held-out accuracy: `tasks eval`)")
    print(f"wrote {args.output}: {written / 2**20:.1f} MiB, digest {model.digest}")
    return 0


def _model(command: str, path: str) -> TaskModel | int:
    try:
        return read_task_model(Path(path))
    except (FileRefused, TaskError) as exc:
        return _fail(command, f"{path}: {exc}")


def cmd_eval(args: argparse.Namespace) -> int:
    model = _model("eval", args.model)
    if isinstance(model, int):
        return model
    examples = _examples("eval", args.examples)
    if isinstance(examples, int):
        return examples
    report = evaluate(model, examples, args.min_confidence)
    if args.format == "json":
        data: dict[str, Any] = {"model": args.model, "digest": model.digest, **report.as_dict()}
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_report(report, args.examples))
    return 0


def cmd_corpus(args: argparse.Namespace) -> int:
    from edgeproxy.routing.corpus import examples

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for split, per_task in (("train", args.train_per_task), ("heldout", args.heldout_per_task)):
        path = out / f"{split}.jsonl"
        lines = [orjson.dumps(e) for e in examples(split, per_task, args.seed)]
        path.write_bytes(b"\n".join(lines) + b"\n")
        print(f"wrote {path}: {len(lines)} examples")
    return 0


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a probability: 0 to 1")
    return value


def add_tasks(sub: Any) -> None:
    """The ``tasks`` command and its subcommands."""
    tasks = sub.add_parser(
        "tasks",
        help="train and evaluate the task classifier",
        description="Train and evaluate the classifier that gives requests a task (docs/tasks.md).",
        epilog="examples:\n"
        "  edgeproxy tasks corpus -o tests/fixtures/tasks          # the synthetic corpus\n"
        "  edgeproxy tasks train train.jsonl -o tasks.model       # labelled prompts -> a model\n"
        "  edgeproxy tasks eval heldout.jsonl --model tasks.model # accuracy, confusion table\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_tasks_commands(tasks.add_subparsers(dest="tasks_command", required=True))


def add_tasks_commands(sub: Any) -> None:
    """Register the ``tasks`` subcommands on ``sub`` (an argparse subparsers object)."""
    train_p = sub.add_parser(
        "train", help="train a task classifier on labelled prompts (JSON Lines)"
    )
    train_p.add_argument(
        "examples",
        metavar="EXAMPLES.jsonl",
        help='one example a line: {"text": ..., "task": ...} or {"messages": [...], "task": ...}',
    )
    train_p.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file")
    defaults = TrainSettings()
    train_p.add_argument(
        "--bits", type=int, default=defaults.bits, help="2^BITS hash buckets (default 18)"
    )
    train_p.add_argument(
        "--char-ngrams",
        type=_ngrams,
        default=defaults.char_ngrams,
        metavar="MIN-MAX",
        help="character n-gram lengths (default 3-5; 0-0 for none)",
    )
    train_p.add_argument(
        "--word-ngrams",
        type=int,
        default=defaults.word_ngrams,
        metavar="N",
        help="word n-grams up to N words (default 2; 0 for none)",
    )
    train_p.add_argument(
        "--max-bytes",
        type=int,
        default=defaults.max_bytes,
        help="longer prompts are read as their first and last halves (default 8192)",
    )
    train_p.add_argument("--epochs", type=int, default=defaults.epochs, help="default 10")
    train_p.add_argument("--seed", type=int, default=defaults.seed, help="default 0")
    train_p.add_argument(
        "--learning-rate", type=float, default=defaults.learning_rate, help="default 0.5"
    )
    train_p.set_defaults(func=cmd_train)

    eval_p = sub.add_parser(
        "eval", help="accuracy, per-task precision/recall and confusion on labelled prompts"
    )
    eval_p.add_argument("examples", metavar="HELDOUT.jsonl")
    eval_p.add_argument("--model", required=True, metavar="MODEL", help="model file")
    eval_p.add_argument(
        "--min-confidence",
        type=_probability,
        default=DEFAULT_MIN_CONFIDENCE,
        help=f"report what share the classifier decides at this threshold (default "
        f"{DEFAULT_MIN_CONFIDENCE})",
    )
    eval_p.add_argument("--format", default="text", choices=["text", "json"])
    eval_p.set_defaults(func=cmd_eval)

    corpus = sub.add_parser(
        "corpus", help="write the synthetic labelled corpus (train.jsonl, heldout.jsonl)"
    )
    corpus.add_argument("-o", "--output", required=True, metavar="DIR")
    corpus.add_argument("--seed", type=int, default=0)
    corpus.add_argument("--train-per-task", type=int, default=750, metavar="N")
    corpus.add_argument("--heldout-per-task", type=int, default=250, metavar="N")
    corpus.set_defaults(func=cmd_corpus)
