"""Tasks: the ``tasks:`` section compiles (and its mistakes are located), and ``classify`` gives
every request a task in the documented order: explicit name, first matching rule, confident
classifier, the route's default."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeproxy import tokens
from edgeproxy._core import TaskModel, train_task_model
from edgeproxy.errors import PolicyError
from edgeproxy.policy import load_policy_text
from edgeproxy.policy.describe import describe_policy
from edgeproxy.policy.diff import diff_policies
from edgeproxy.routing.tasks import (
    MAX_RULE_TEXT,
    TASK_HEADER,
    TaskDecision,
    TaskSource,
    UnknownTask,
    classifier_text,
    classify,
    classify_now,
    system_prompt,
)
from edgeproxy.snapshot import Policy

BASE: dict[str, Any] = {
    "version": 1,
    "providers": {
        "p": {
            "kind": "openai",
            "regions": {"r": {"base_url": "http://127.0.0.1:1/v1"}},
            "models": {"m": None},
        },
        "q": {
            "kind": "openai",
            "regions": {"r": {"base_url": "http://127.0.0.1:2/v1"}},
            "models": {"m": None},
        },
    },
    "routes": {
        "assistant": {"aliases": ["autofill", "helper"], "chain": ["p/r/m", "q/r/m"]},
        "writer": {"chain": ["q/r/m", "p/r/m"]},
    },
}
# The same routes, the writer's requests writing unless something else decides.
WRITER_WRITES = {
    **BASE["routes"],
    "writer": {"default_task": "writing", "chain": ["q/r/m", "p/r/m"]},
}


def _policy(tasks: dict[str, Any] | None = None, tmp: Path | None = None, **more: Any) -> Policy:
    data = {**BASE, **more}
    if tasks is not None:
        data["tasks"] = tasks
    return load_policy_text(yaml.safe_dump(data, sort_keys=False), "t.yaml", {}, tmp)


def _problems(tasks: dict[str, Any], tmp: Path | None = None, **more: Any) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        _policy(tasks, tmp, **more)
    return [str(p) for p in caught.value.problems]


CATEGORIES = ["extraction", "qa", "writing", "chat"]


def _body(*messages: dict[str, Any], model: str = "assistant", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": list(messages), **fields}


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _system(text: str) -> dict[str, Any]:
    return {"role": "system", "content": text}


class CountSpy:
    """A prompt counter that records each encoding it is asked for."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.asked: list[str] = []

    def __call__(self, encoding: str) -> int:
        self.asked.append(encoding)
        return tokens.count_chat(self.body, encoding).tokens


def _decide(
    policy: Policy,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    spy: CountSpy | None = None,
) -> TaskDecision | UnknownTask:
    route = policy.route_for(body["model"])
    assert route is not None
    return classify_now(policy.tasks, route, headers or {}, body, spy or CountSpy(body))


def _task(policy: Policy, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    decision = _decide(policy, body, headers)
    assert isinstance(decision, TaskDecision), decision
    return decision.task


# -- no tasks section ---------------------------------------------------------------------------


def test_without_a_tasks_section_every_request_gets_its_routes_default() -> None:
    policy = _policy()
    decision = _decide(policy, _body(_user("hi")))
    assert decision == TaskDecision("default", TaskSource.DEFAULT, route="assistant")
    assert decision.why == "default of route 'assistant'"
    policy = _policy({"categories": ["writing"]}, routes=WRITER_WRITES)
    assert _task(policy, _body(_user("hi"), model="writer")) == "writing"
    assert _task(policy, _body(_user("hi"), model="autofill")) == "default"


def test_default_task_is_inherited_from_defaults_and_overridden_per_route() -> None:
    policy = _policy(
        {"categories": CATEGORIES}, defaults={"default_task": "chat"}, routes=WRITER_WRITES
    )
    assert policy.routes["assistant"].default_task == "chat"
    assert policy.routes["writer"].default_task == "writing"
    assert _task(policy, _body(_user("x"), model="helper")) == "chat"


# -- the app names the task ----------------------------------------------------------------------


def test_the_header_then_metadata_name_the_task() -> None:
    policy = _policy({"categories": CATEGORIES, "rules": [{"task": "qa", "messages": {"min": 1}}]})
    body = _body(_user("hi"), metadata={"task": "writing"})
    header = _decide(policy, body, {TASK_HEADER: " extraction "})
    assert header == TaskDecision("extraction", TaskSource.HEADER)
    assert header.why == "header x-edgeproxy-task"
    assert _decide(policy, body) == TaskDecision("writing", TaskSource.METADATA)
    # An empty header names nothing: metadata, then the rules decide.
    assert _decide(policy, body, {TASK_HEADER: "  "}).source is TaskSource.METADATA  # type: ignore[union-attr]
    assert _task(policy, _body(_user("hi"), metadata={"user": "u1"})) == "qa"
    # "default" is always a known task.
    assert _task(policy, body, {TASK_HEADER: "default"}) == "default"


@pytest.mark.parametrize(
    ("headers", "metadata", "source", "shown"),
    [
        ({TASK_HEADER: "translation"}, None, TaskSource.HEADER, "'translation'"),
        ({}, {"task": "Writing"}, TaskSource.METADATA, "'Writing'"),  # names are case-sensitive
        ({}, {"task": 7}, TaskSource.METADATA, "a value"),
        ({}, {"task": ["qa"]}, TaskSource.METADATA, "a value"),
        # Hostile values are not echoed into the error (logs, terminals).
        ({TASK_HEADER: "qa\r\nx-admin: 1"}, None, TaskSource.HEADER, "a value"),
        ({TASK_HEADER: "\x1b[31mred" + "a" * 5000}, None, TaskSource.HEADER, "a value"),
    ],
)
def test_an_undeclared_name_is_refused_with_a_safe_message(
    headers: dict[str, str], metadata: Any, source: TaskSource, shown: str
) -> None:
    policy = _policy({"categories": CATEGORIES})
    body = _body(_user("hi"), **({} if metadata is None else {"metadata": metadata}))
    refused = _decide(policy, body, headers)
    assert isinstance(refused, UnknownTask)
    assert refused.source is source
    assert refused.param == ("metadata.task" if source is TaskSource.METADATA else None)
    assert f"names {shown}," in refused.message
    assert "known: extraction, qa, writing, chat, default" in refused.message
    assert "\n" not in refused.message and "\x1b" not in refused.message
    assert len(refused.message) < 300


def test_explicit_false_ignores_the_apps_name() -> None:
    policy = _policy({"categories": CATEGORIES, "explicit": False})
    body = _body(_user("hi"), metadata={"task": "nonsense"})
    assert _decide(policy, body, {TASK_HEADER: "nonsense"}) == TaskDecision(
        "default", TaskSource.DEFAULT, route="assistant"
    )


# -- rules ----------------------------------------------------------------------------------------


RULES = {
    "categories": CATEGORIES,
    "rules": [
        {"name": "json-out", "task": "extraction", "response_format": "json"},
        {"task": "extraction", "routes": ["autofill"]},
        {"name": "agent", "task": "chat", "tools": True, "messages": {"min": 3}},
        {"task": "writing", "max_tokens": {"min": 4000}},
        {"task": "qa", "system_keywords": ["cite", "C++"]},
        {"task": "writing", "system_regex": r"(?i)\btechnical writer\b"},
        {"task": "qa", "routes": ["writer"], "tools": False},
    ],
}


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (_body(_user("x"), response_format={"type": "json_object"}), 0),
        (_body(_user("x"), response_format={"type": "json_schema", "json_schema": {}}), 0),
        (_body(_user("x"), model="autofill"), 1),
        (_body(_user("a"), _user("b"), _user("c"), tools=[{"type": "function"}]), 2),
        (_body(_user("a"), _user("b"), _user("c"), functions=[{"name": "f"}]), 2),
        (_body(_user("x"), max_tokens=4000), 3),
        (_body(_user("x"), max_completion_tokens=5000, max_tokens=10), 3),
        (_body(_system("Always CITE your sources."), _user("x")), 4),
        (_body(_system("You know c++."), _user("x")), 4),
        (
            _body({"role": "developer", "content": [{"type": "text", "text": "cite"}]}, _user("x")),
            4,
        ),
        (_body(_system("You are a Technical Writer."), _user("x")), 5),
        (_body(_user("x"), model="writer"), 6),
    ],
)
def test_each_condition_matches_what_it_says(body: dict[str, Any], rule: int) -> None:
    policy = _policy(RULES)
    decision = _decide(policy, body)
    assert isinstance(decision, TaskDecision)
    assert decision.source is TaskSource.RULE
    assert decision.rule is not None and decision.rule.index == rule
    assert decision.task == RULES["rules"][rule]["task"]


@pytest.mark.parametrize(
    "body",
    [
        _body(_user("x"), response_format={"type": "text"}),
        _body(_user("x"), response_format="json_object"),  # not the documented shape
        _body(_user("x"), model="helper"),  # an alias the rule does not name
        _body(_user("a"), _user("b"), tools=[{"type": "function"}]),  # two messages, not 3
        _body(_user("a"), _user("b"), _user("c"), tools=[]),  # an empty list offers nothing
        _body(_user("x"), max_tokens=3999),
        _body(_user("x"), max_tokens=True),  # a bool is not a count
        _body(_user("x"), max_completion_tokens="4000"),
        _body(_system("a special case"), _user("x")),  # "spec" is not "cite"; whole words
        _body(_system("excited"), _user("cite")),  # keywords look at the system prompt only
        _body(_system("a technical writers guild"), _user("x")),
        _body(_user("x"), model="writer", tools=[{"type": "function"}]),
    ],
)
def test_a_request_no_rule_holds_for_gets_the_default(body: dict[str, Any]) -> None:
    decision = _decide(_policy(RULES), body)
    assert isinstance(decision, TaskDecision)
    assert decision.source is TaskSource.DEFAULT, decision.why


def test_the_first_matching_rule_wins() -> None:
    policy = _policy(RULES)
    body = _body(
        _system("cite"), _user("x"), model="autofill", response_format={"type": "json_object"}
    )
    decision = _decide(policy, body)
    assert isinstance(decision, TaskDecision) and decision.rule is not None
    assert (decision.rule.index, decision.why) == (0, "rules[0] (json-out)")
    assert decision.log_fields() == {
        "task": "extraction",
        "task_source": "rule",
        "task_rule": 0,
        "task_rule_name": "json-out",
    }


def test_prompt_tokens_are_counted_only_when_a_rule_needs_them_and_exactly() -> None:
    policy = _policy(
        {
            "categories": CATEGORIES,
            "tokenizer": "cl100k_base",
            "rules": [
                {"task": "extraction", "response_format": "json"},
                {"task": "qa", "prompt_tokens": {"min": 50}, "max_tokens": {"max": 100}},
                {"task": "chat", "prompt_tokens": {"max": 49}},
            ],
        }
    )
    json_body = _body(_user("x " * 200), response_format={"type": "json_object"})
    spy = CountSpy(json_body)
    assert _task_with(policy, json_body, spy) == "extraction"
    assert spy.asked == []  # an earlier rule decided
    no_max = _body(_user("x " * 200))
    spy = CountSpy(no_max)
    assert _task_with(policy, no_max, spy) == "default"  # rule 1 fails on max_tokens first ...
    assert spy.asked == ["cl100k_base"]  # ... so only rule 2 asked, and it is 208 tokens > 49
    long = _body(_user("x " * 200), max_tokens=10)
    exact = tokens.count_chat(long, "cl100k_base").tokens
    assert exact >= 50
    spy = CountSpy(long)
    assert _task_with(policy, long, spy) == "qa"
    assert spy.asked == ["cl100k_base"]  # counted once, in the policy's tokenizer
    short = _body(_user("hi"), max_tokens=10)
    assert tokens.count_chat(short, "cl100k_base").tokens < 50
    assert _task_with(policy, short, CountSpy(short)) == "chat"


def _task_with(policy: Policy, body: dict[str, Any], spy: CountSpy) -> str:
    decision = _decide(policy, body, spy=spy)
    assert isinstance(decision, TaskDecision)
    return decision.task


def test_the_async_call_awaits_the_request_paths_count() -> None:
    policy = _policy(
        {"categories": CATEGORIES, "rules": [{"task": "qa", "prompt_tokens": {"min": 1}}]}
    )
    body = _body(_user("what does it say?"))
    route = policy.routes["assistant"]
    asked: list[str] = []

    async def count(encoding: str) -> int:
        asked.append(encoding)
        await asyncio.sleep(0)
        return tokens.count_chat(body, encoding).tokens

    decision = asyncio.run(classify(policy.tasks, route, {}, body, count))
    assert isinstance(decision, TaskDecision) and decision.task == "qa"
    assert asked == ["o200k_base"]


def test_a_catastrophic_regex_is_linear_on_a_long_system_prompt() -> None:
    policy = _policy(
        {"categories": CATEGORIES, "rules": [{"task": "qa", "system_regex": "^(a+)+$"}]}
    )
    body = _body(_system("a" * 200_000 + "!"), _user("x"))
    assert system_prompt(body) == "a" * MAX_RULE_TEXT  # bounded too
    # Python's re would take longer than the universe's age here; the automaton takes linear time.
    assert _task(policy, body) == "qa"  # the bounded text is all 'a'
    body = _body(_system("a" * 1000 + "!"), _user("x"))
    assert _task(policy, body) == "default"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "assistant"},
        {"model": "assistant", "messages": "hi"},
        {"model": "assistant", "messages": [None, 3, "x", {"role": "system", "content": 5}]},
        {"model": "assistant", "messages": [{"role": "system", "content": [1, {"text": 2}]}]},
        {"model": 7, "messages": []},
        {"model": "assistant", "messages": [], "metadata": ["task"], "response_format": 3},
        {"model": "assistant", "messages": [], "max_tokens": -5, "tools": {"a": 1}},
    ],
)
def test_hostile_bodies_get_a_task_not_an_exception(body: dict[str, Any]) -> None:
    policy = _policy(
        {**RULES, "rules": [*RULES["rules"], {"task": "qa", "prompt_tokens": {"min": 1}}]}
    )
    route = policy.routes["assistant"]
    decision = classify_now(policy.tasks, route, {}, body, lambda _: 0)
    assert isinstance(decision, TaskDecision) and policy.tasks.knows(decision.task)


# -- compile problems -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tasks", "more", "expected"),
    [
        ({"categories": ["qa", "qa"]}, {}, "tasks.categories: named twice: qa"),
        ({"categories": ["has space"]}, {}, "is not a task name"),
        (
            {"categories": ["qa"], "rules": [{"task": "qna", "tools": True}]},
            {},
            "tasks.rules[0].task: unknown task 'qna' (did you mean 'qa'?)",
        ),
        (
            {"categories": ["qa"], "rules": [{"task": "qa"}]},
            {},
            "a rule needs at least one condition",
        ),
        (
            {"categories": ["qa"], "rules": [{"task": "qa", "routes": ["asistant"]}]},
            {},
            "tasks.rules[0].routes[0]: no route or alias is named 'asistant' (did you mean 'assistant'?)",
        ),
        (
            {"categories": ["qa"], "rules": [{"task": "qa", "messages": {"min": 5, "max": 2}}]},
            {},
            "tasks.rules[0].messages: min 5 is greater than max 2: nothing matches",
        ),
        (
            {"categories": ["qa"], "rules": [{"task": "qa", "max_tokens": {}}]},
            {},
            "tasks.rules[0].max_tokens: set min, max or both",
        ),
        (
            {"categories": ["qa"], "rules": [{"task": "qa", "system_regex": "a(?=b)"}]},
            {},
            "tasks.rules[0].system_regex: not a valid pattern: look-around",
        ),
        (
            {"categories": ["qa"], "rules": [{"task": "qa", "system_regex": "(x"}]},
            {},
            "tasks.rules[0].system_regex: not a valid pattern",
        ),
        (
            {"categories": ["qa"], "rules": [{"task": "qa", "system_regex": "a{1000}{1000}"}]},
            {},
            "simplify it",
        ),
        (
            {"categories": ["qa"], "rules": [{"task": "qa", "system_keywords": [" "]}]},
            {},
            "tasks.rules[0].system_keywords: a keyword is empty",
        ),
        (
            {"categories": ["qa"]},
            {"defaults": {"default_task": "writing"}},
            "defaults.default_task: unknown task 'writing'",
        ),
        (
            {"categories": ["qa"], "rules": [{"task": "qa", "response_format": "xml"}]},
            {},
            "tasks.rules[0].response_format: must be",
        ),
        (
            {"categories": ["qa"], "classifier": {"model": "m", "min_confidence": 1.5}},
            {},
            "tasks.classifier.min_confidence",
        ),
    ],
)
def test_mistakes_are_located_problems(
    tasks: dict[str, Any], more: dict[str, Any], expected: str
) -> None:
    problems = _problems(tasks, **more)
    assert any(expected in p for p in problems), problems


def test_problems_name_the_line_of_the_policy_they_are_on() -> None:
    text = yaml.safe_dump(
        {**BASE, "tasks": {"categories": ["qa"], "rules": [{"task": "qna", "tools": True}]}},
        sort_keys=False,
    )
    line = text.splitlines().index("  - task: qna") + 1
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "t.yaml", {})
    assert [str(p) for p in caught.value.problems] == [
        f"t.yaml:{line}:5: tasks.rules[0].task: unknown task 'qna' (did you mean 'qa'?)"
    ]


def test_a_routes_unknown_default_task_is_located() -> None:
    problems = _problems({"categories": ["qa"]}, routes=WRITER_WRITES)
    assert any("routes.writer.default_task: unknown task 'writing'" in p for p in problems)


# -- the classifier --------------------------------------------------------------------------------


def _model(tmp: Path, labels: list[str], name: str = "tasks.model") -> Path:
    texts = {
        "qa": ["what does the contract say about termination?", "according to the doc, who?"],
        "writing": ["draft a product spec for dark mode", "write a long blog post"],
        "extraction": ["extract the fields as json", "fill in the invoice number"],
        "chat": ["hey how are you", "tell me a joke"],
    }
    xs, ys = [], []
    for i, label in enumerate(labels):
        xs += texts[label]
        ys += [i] * len(texts[label])
    path = tmp / name
    path.write_bytes(train_task_model(xs, ys, labels, bits=10, epochs=30).to_bytes())
    return path


def test_the_classifier_decides_when_confident_and_the_default_otherwise(tmp_path: Path) -> None:
    _model(tmp_path, ["qa", "writing", "chat"])
    tasks = {"categories": CATEGORIES, "classifier": {"model": "tasks.model"}}
    policy = _policy(tasks, tmp_path)
    assert policy.tasks.classifier is not None
    assert policy.tasks.classifier.min_confidence == 0.6
    decision = _decide(policy, _body(_user("draft a product spec for the export tool")))
    assert isinstance(decision, TaskDecision)
    assert (decision.task, decision.source, decision.label) == (
        "writing",
        TaskSource.CLASSIFIER,
        "writing",
    )
    assert decision.confidence is not None and decision.confidence >= 0.6
    assert decision.why == f"classifier: writing {decision.confidence:.2f}"
    assert decision.log_fields()["task_score"] == round(decision.confidence, 4)
    # Nothing is confident enough at 1.0: the route's default, with the classifier's view.
    strict = _policy(
        {**tasks, "classifier": {"model": "tasks.model", "min_confidence": 1}}, tmp_path
    )
    decision = _decide(strict, _body(_user("draft a product spec for the export tool")))
    assert isinstance(decision, TaskDecision)
    assert (decision.task, decision.source, decision.label) == (
        "default",
        TaskSource.DEFAULT,
        "writing",
    )
    assert decision.why.startswith("default of route 'assistant' (classifier: writing ")
    assert decision.why.endswith("< 1)")
    # Rules come first.
    ruled = _policy({**tasks, "rules": [{"task": "chat", "routes": ["assistant"]}]}, tmp_path)
    assert _task(ruled, _body(_user("draft a product spec"))) == "chat"


def test_the_classifier_reads_system_and_user_messages_not_the_assistants() -> None:
    messages = [
        _system("sys"),
        _user("first"),
        {"role": "assistant", "content": "ASSISTANT"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url"}]},
    ]
    assert classifier_text(messages) == "sys\nfirst\nsecond"
    long = classifier_text([_user("h" * 100_000 + "tail")])
    assert len(long) < 70_000 and long.startswith("hhh") and long.endswith("tail")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read the model file"),
        (b"", "not an edgeproxy task model"),
        (b"version: 1\nproviders: {}\n", "not an edgeproxy task model"),
        ("truncated", "truncated or padded"),
        ("flipped", "checksum"),
        ("directory", "is a directory, not a regular file"),
        ("fifo", "is a FIFO, not a regular file"),
        ("huge", "larger than 64 MiB"),
        ("labels", "the model tells tasks the policy does not declare: chat"),
    ],
)
def test_an_unusable_model_file_is_a_located_problem_never_a_crash(
    tmp_path: Path, content: Any, expected: str
) -> None:
    path = tmp_path / "tasks.model"
    good = TaskModel.from_bytes(_model(tmp_path, ["qa", "writing"], "good.model").read_bytes())
    data = good.to_bytes()
    if content == "truncated":
        path.write_bytes(data[:-100])
    elif content == "flipped":
        path.write_bytes(data[:-30] + bytes([data[-30] ^ 1]) + data[-29:])
    elif content == "directory":
        path.mkdir()
    elif content == "fifo":
        os.mkfifo(path)  # opened non-blocking and refused: a reload never hangs on it
    elif content == "huge":
        with path.open("wb") as f:
            f.truncate(65 * 1024 * 1024)  # sparse: refused by size before any read
    elif content == "labels":
        _model(tmp_path, ["qa", "chat"])
    elif content is not None:
        path.write_bytes(content)
    problems = _problems(
        {"categories": ["qa", "writing"], "classifier": {"model": "tasks.model"}}, tmp_path
    )
    assert len(problems) == 1, problems
    assert problems[0].startswith("t.yaml:"), problems
    assert "tasks.classifier.model: " in problems[0] and expected in problems[0], problems


# -- describe and diff ------------------------------------------------------------------------------


def test_describe_and_diff_show_rules_and_the_model(tmp_path: Path) -> None:
    _model(tmp_path, ["qa", "writing"])
    tasks = {
        "categories": ["qa", "writing"],
        "rules": [
            {"name": "cite", "task": "qa", "system_keywords": ["cite"], "max_tokens": {"max": 500}}
        ],
        "classifier": {"model": "tasks.model", "min_confidence": 0.7},
    }
    old = _policy(tasks, tmp_path)
    shown = describe_policy(old)["settings"]["tasks"]
    assert shown["rules"] == ["rules[0] (cite): qa if max_tokens <= 500, system prompt has cite"]
    assert shown["classifier"]["min_confidence"] == 0.7
    assert shown["classifier"]["model"].startswith("tasks.model (digest ")
    assert _policy(None).tasks.classifier is None
    assert describe_policy(_policy(None))["settings"]["tasks"]["classifier"] is None
    # Retrained in place: the same path, another model; diff says so.
    _model(tmp_path, ["writing", "qa"])
    new = _policy(tasks, tmp_path)
    changes = {c.what: c for c in diff_policies(old, new)}
    assert set(changes) == {"tasks.classifier.model"}
    assert changes["tasks.classifier.model"].old != changes["tasks.classifier.model"].new
    assert diff_policies(new, _policy(tasks, tmp_path)) == []
