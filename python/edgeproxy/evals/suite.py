"""Eval suites: the items an eval runs, and how each answer is graded (docs/evals.md).

A suite is a YAML (or JSON) file::

    name: market
    defaults: {max_tokens: 256, temperature: 0}
    rubrics:                       # per task: the judge's criteria
      writing:
        pass_score: 0.7
        criteria:
          - {name: covers_facts, description: "States the facts asked for.", expect: [...]}
    items:
      - id: qa-001
        task: qa
        messages: [{role: user, content: "What is the capital of France? One word."}]
        grader: {type: exact, expected: Paris}

or a JSONL file with one item per line (no rubrics: judge graders then carry their criteria).
Items may also give ``tools``, ``tool_choice``, ``response_format``, ``max_tokens`` and
``request`` (other Chat Completions fields), and ``reference``: a right answer (the simulator
plays it; the pairwise judge compares with it); graders whose expected value is an answer imply
it. A suite that is not valid is refused with every problem located.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_SUITE_BYTES = 16 * 1024 * 1024
SHIPPED_SUFFIX = ".yaml"
DEFAULT_CRITERION_DESCRIPTION = "The answer is correct, complete and clear."


class SuiteError(ValueError):
    """A suite that cannot be used; ``problems`` lists each one with its location."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- graders --------------------------------------------------------------------------------


class ExactGrader(_Model):
    """The whole answer equals ``expected`` (normalised: trimmed, surrounding quotes and a final
    period dropped, whitespace collapsed, case-folded unless ``case_sensitive``)."""

    type: Literal["exact"]
    expected: str
    case_sensitive: bool = False


class ContainsGrader(_Model):
    """The answer contains every one of ``expected`` (``any: true``: at least one)."""

    type: Literal["contains"]
    expected: list[str] = Field(min_length=1)
    any: bool = False
    case_sensitive: bool = False

    @field_validator("expected", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RegexGrader(_Model):
    """``pattern`` is found in the answer (``fullmatch: true``: matches all of it); ``flags``
    any of ``i`` (ignore case), ``m`` (multiline), ``s`` (dot matches newline)."""

    type: Literal["regex"]
    pattern: str
    flags: str = ""
    fullmatch: bool = False

    @field_validator("flags")
    @classmethod
    def _flags(cls, value: str) -> str:
        bad = sorted(set(value) - set("ims"))
        if bad:
            raise ValueError(f"unknown regex flag(s) {''.join(bad)!r}: use i, m, s")
        return value

    def compiled(self) -> re.Pattern[str]:
        flags = 0
        for letter, flag in (("i", re.I), ("m", re.M), ("s", re.S)):
            if letter in self.flags:
                flags |= flag
        return re.compile(self.pattern, flags)


class JsonSchemaGrader(_Model):
    """The answer is JSON (a ```json fence around it is allowed) valid under ``schema`` (JSON
    Schema draft 2020-12, checked with the ``jsonschema`` library)."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value


class NumericGrader(_Model):
    """The last number in the answer is within ``tolerance`` (absolute) or ``relative`` (a share
    of ``expected``) of ``expected``, whichever is larger (both 0: equal)."""

    type: Literal["numeric"]
    expected: float
    tolerance: float = Field(0.0, ge=0)
    relative: float = Field(0.0, ge=0)


class Criterion(_Model):
    """One thing the judge scores from 1 to 10. ``expect``: phrases a good answer contains
    (shown to the judge; the simulated judge checks them literally)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = Field(min_length=1)
    expect: list[str] = []


class JudgeGrader(_Model):
    """LLM-as-judge. ``mode: score``: each criterion scored 1-10, the item's score is their
    mean mapped to 0..1. ``mode: pairwise``: the answer against ``reference``, judged in both
    orders: 1 when it wins both, 0 when it loses both, 0.5 otherwise. ``criteria`` default to the
    suite's rubric for the item's task; ``pass_score`` to the rubric's (else 0.7; pairwise 0.5)."""

    type: Literal["judge"]
    mode: Literal["score", "pairwise"] = "score"
    criteria: list[Criterion] | None = None
    reference: str | None = None
    pass_score: float | None = Field(None, ge=0, le=1)


Grader = Annotated[
    ExactGrader | ContainsGrader | RegexGrader | JsonSchemaGrader | NumericGrader | JudgeGrader,
    Field(discriminator="type"),
]
GRADER_TYPES = ("exact", "contains", "regex", "json_schema", "numeric", "judge")


# -- items and suites -----------------------------------------------------------------------


class Message(_Model):
    model_config = ConfigDict(extra="allow", frozen=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Any = None


class Item(_Model):
    id: str = Field(min_length=1, max_length=200)
    task: str = Field(min_length=1, max_length=100)
    messages: list[Message] = Field(min_length=1)
    grader: Grader
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    request: dict[str, Any] = {}  # other Chat Completions fields (temperature, seed, ...)
    reference: Any = None  # a right answer: text, or a JSON value

    @field_validator("request")
    @classmethod
    def _no_overrides(cls, value: dict[str, Any]) -> dict[str, Any]:
        owned = sorted(set(value) & {"model", "messages", "stream", "stream_options", "n"})
        if owned:
            raise ValueError(f"the eval sets {', '.join(owned)} itself")
        return value


class Rubric(_Model):
    criteria: list[Criterion] = Field(min_length=1)
    pass_score: float = Field(0.7, ge=0, le=1)


class Defaults(_Model):
    max_tokens: int = Field(256, ge=1)
    request: dict[str, Any] = {}


class SuiteSpec(_Model):
    name: str = Field(min_length=1)
    description: str = ""
    defaults: Defaults = Defaults()
    rubrics: dict[str, Rubric] = {}
    items: list[Item] = Field(min_length=1)


@dataclass(frozen=True)
class Suite:
    """A validated suite, with its content hash (what a scorecard was measured on)."""

    spec: SuiteSpec
    source: str
    hash: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def items(self) -> list[Item]:
        return self.spec.items

    @property
    def tasks(self) -> list[str]:
        return sorted({item.task for item in self.spec.items})

    def item(self, item_id: str) -> Item:
        for item in self.spec.items:
            if item.id == item_id:
                return item
        raise KeyError(item_id)

    def max_tokens(self, item: Item) -> int:
        return item.max_tokens or self.spec.defaults.max_tokens

    def criteria(self, item: Item, grader: JudgeGrader) -> list[Criterion]:
        if grader.criteria:
            return grader.criteria
        rubric = self.spec.rubrics.get(item.task)
        if rubric is not None:
            return rubric.criteria
        return [Criterion(name="overall", description=DEFAULT_CRITERION_DESCRIPTION)]

    def pass_score(self, item: Item, grader: JudgeGrader) -> float:
        if grader.pass_score is not None:
            return grader.pass_score
        if grader.mode == "pairwise":
            return 0.5
        rubric = self.spec.rubrics.get(item.task)
        return rubric.pass_score if rubric is not None else 0.7

    def request_body(self, item: Item) -> dict[str, Any]:
        """The Chat Completions body the item sends (without ``model`` and ``stream``)."""
        body: dict[str, Any] = {**self.spec.defaults.request, **item.request}
        body["messages"] = [m.model_dump(exclude_none=False) for m in item.messages]
        body["max_tokens"] = self.max_tokens(item)
        for name in ("tools", "tool_choice", "response_format"):
            value = getattr(item, name)
            if value is not None:
                body[name] = value
        return body


def reference_text(item: Item) -> str | None:
    """A right answer to ``item`` as text: its ``reference``, else what the grader's expected
    value implies (None when neither says: regex and json_schema graders need a reference)."""
    if item.reference is not None:
        if isinstance(item.reference, str):
            return item.reference
        return json.dumps(item.reference)
    grader = item.grader
    if isinstance(grader, ExactGrader):
        return grader.expected
    if isinstance(grader, ContainsGrader):
        return grader.expected[0] if grader.any else " ".join(grader.expected)
    if isinstance(grader, NumericGrader):
        value = grader.expected
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(grader, JudgeGrader):
        return grader.reference
    return None


# -- loading --------------------------------------------------------------------------------


def shipped_suites() -> dict[str, Path]:
    """The suites that ship with edgeproxy, by name (``--suite market``)."""
    folder = resources.files("edgeproxy.evals") / "suites"
    return {
        entry.name.removesuffix(SHIPPED_SUFFIX): Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(SHIPPED_SUFFIX)
    }


def resolve_suite(name_or_path: str, base_dir: Path | None = None) -> Path:
    """A suite file: a path (relative ones against ``base_dir`` first, then the working
    directory), else the name of a shipped suite."""
    path = Path(name_or_path)
    candidates = [base_dir / path] if base_dir is not None and not path.is_absolute() else []
    candidates.append(path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shipped = shipped_suites()
    if name_or_path in shipped:
        return shipped[name_or_path]
    raise SuiteError(
        name_or_path,
        [
            f"no such suite file, and no shipped suite of that name (shipped: {', '.join(sorted(shipped))})"
        ],
    )


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SUITE_BYTES + 1)
    except OSError as exc:
        raise SuiteError(str(path), [f"cannot read it: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_SUITE_BYTES:
        raise SuiteError(str(path), [f"larger than {MAX_SUITE_BYTES} bytes"])
    return parse_suite(raw, str(path))


def parse_suite(raw: bytes, source: str) -> Suite:
    """A suite from a file's bytes: JSONL when ``source`` ends in ``.jsonl``, else YAML/JSON."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise SuiteError(source, ["not UTF-8 text"]) from None
    data = _jsonl(text, source) if source.endswith(".jsonl") else _yaml(text, source)
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        raise SuiteError(source, _problems(exc, data)) from None
    problems = _cross_checks(spec)
    if problems:
        raise SuiteError(source, problems)
    return Suite(spec=spec, source=source, hash=suite_hash(spec))


def suite_hash(spec: SuiteSpec) -> str:
    """A content hash of what the suite asks and how it grades (not how the file is written)."""
    canonical = orjson.dumps(
        spec.model_dump(mode="json", by_alias=True), option=orjson.OPT_SORT_KEYS
    )
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def _yaml(text: str, source: str) -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise SuiteError(
            source, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]
        ) from None
    if not isinstance(data, Mapping):
        raise SuiteError(source, ["a suite file holds a mapping with name and items"])
    return data


def _jsonl(text: str, source: str) -> Any:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except ValueError as exc:
            raise SuiteError(source, [f"line {number}: not JSON ({exc})"]) from None
    return {"name": Path(source).stem, "items": items}


def _problems(exc: ValidationError, data: Any) -> list[str]:
    out = []
    for error in exc.errors()[:50]:
        loc = error["loc"]
        where = ""
        for part in loc:
            if isinstance(part, int):
                where += f"[{part}]"
            elif part in GRADER_TYPES:  # pydantic names the union's branch: not a real key
                continue
            else:
                where += f".{part}" if where else str(part)
        if len(loc) >= 2 and loc[0] == "items" and isinstance(loc[1], int):
            item_id = _item_id(data, loc[1])
            if item_id:
                where += f" (id {item_id})"
        out.append(f"{where}: {error['msg']}")
    return out


def _item_id(data: Any, index: int) -> str | None:
    try:
        item_id = data["items"][index]["id"]
    except (KeyError, IndexError, TypeError):
        return None
    return str(item_id)[:80]


def _cross_checks(spec: SuiteSpec) -> list[str]:
    problems = []
    seen: set[str] = set()
    for i, item in enumerate(spec.items):
        where = f"items[{i}] (id {item.id})"
        if item.id in seen:
            problems.append(f"{where}: the id is used twice")
        seen.add(item.id)
        if isinstance(item.grader, RegexGrader):
            try:
                item.grader.compiled()
            except re.error as exc:
                problems.append(f"{where}.grader.pattern: not a valid regex ({exc})")
        if (
            isinstance(item.grader, JudgeGrader)
            and item.grader.mode == "pairwise"
            and reference_text(item) is None
        ):
            problems.append(
                f"{where}.grader: pairwise judging compares with a reference: give "
                "grader.reference or the item's reference"
            )
    return problems
