"""``edgeproxy policy explain``: a dry run of routing for one request, with the reasons.

It answers the SRE's question "if this request arrived now, with these regions down, where would
it go, and why not elsewhere?" without sending anything. The rules mirror the request path: the
route's compiled chain (already limited to the route's residency set), minus what is down, minus
models whose context window cannot hold the prompt plus the completion asked for (unless the
route compacts the conversation for them: then what compaction would do, predicted from exact
counts, a summary counted at its largest; or it refuses the request); cache-affinity's order
for this request's prefix; the first ``max_attempts`` of what remains are tried in order.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeproxy.context.compact import floor, plan
from edgeproxy.context.measure import measure
from edgeproxy.context.turns import prefix_hash
from edgeproxy.policy.compile import format_tags
from edgeproxy.policy.describe import describe_route
from edgeproxy.routing.affinity import AffinityTable, order
from edgeproxy.routing.tasks import TaskDecision, UnknownTask, classify_now
from edgeproxy.snapshot import Candidate, Policy, Route


@dataclass(frozen=True)
class Verdict:
    key: str
    # "try" (with its attempt number), "skip" (ruled out for this request), "reserve" (eligible
    # but past max_attempts), "excluded" (ruled out by the route's constraints at load time).
    verdict: str
    attempt: int | None
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.key,
            "verdict": self.verdict,
            "attempt": self.attempt,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Explanation:
    policy_source: str
    policy_version: str
    model: str
    route: str | None
    served: tuple[str, ...] = ()  # model names the policy serves (for a route miss)
    constraints: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_method: str = ""
    max_attempts: int = 0
    verdicts: tuple[Verdict, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The route's effective settings as ``GET /admin/policy`` shows them (timeouts, hedging,
    # caching, ...): what the request would run under, never a secret.
    route_settings: dict[str, Any] = field(default_factory=dict)
    # The request's task and why (docs/tasks.md), or why the task it names is refused.
    task: TaskDecision | UnknownTask | None = None
    refused_overflow: bool = False  # context.overflow: error, and a window is too small

    @property
    def tried(self) -> list[Verdict]:
        if isinstance(self.task, UnknownTask) or self.refused_overflow:
            return []  # refused before any attempt
        return [v for v in self.verdicts if v.verdict == "try"]

    @property
    def outcome(self) -> str:
        if self.route is None:
            return (
                f"404 model_not_found: no route serves {self.model!r} "
                f"(served: {', '.join(self.served)})"
            )
        if isinstance(self.task, UnknownTask):
            return f"400 unknown_task: {self.task.message}"
        if self.refused_overflow:
            return (
                "400 context_length_exceeded: a candidate's window cannot hold it and the "
                "route refuses what its fallbacks could not take (context.overflow: error)"
            )
        tried = self.tried
        if not tried:
            why = f" (route constraints: {self.constraints})" if self.constraints else ""
            return f"fails closed: no eligible candidate for this request{why}"
        first = tried[0].key
        rest = len(tried) - 1
        return f"served by {first} if it answers ({rest} fallback attempt(s) after it)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": {"source": self.policy_source, "version": self.policy_version},
            "model": self.model,
            "route": self.route,
            "constraints": self.constraints,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "token_method": self.token_method,
            "max_attempts": self.max_attempts,
            "candidates": [v.as_dict() for v in self.verdicts],
            "notes": list(self.notes),
            "route_settings": self.route_settings,
            "task": _task_dict(self.task),
            "outcome": self.outcome,
            "served": bool(self.tried),
        }


def _task_dict(task: TaskDecision | UnknownTask | None) -> dict[str, Any] | None:
    if isinstance(task, UnknownTask):
        return {"task": None, "source": task.source.value, "error": task.message}
    return None if task is None else task.as_dict()


def matches_down(candidate: Candidate, down: str) -> bool:
    """``down`` is provider, provider/region or provider/region/model."""
    parts = down.split("/", 2)
    mine = (candidate.provider, candidate.region, candidate.model)
    return tuple(parts) == mine[: len(parts)]


def unknown_down(policy: Policy, downs: Iterable[str]) -> list[str]:
    """The --down values that match no candidate of any route (most likely typos)."""
    candidates = [c for name in policy.route_names for c in policy.routes[name].candidates]
    return [d for d in downs if not any(matches_down(c, d) for c in candidates)]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return "" if content is None else str(content)


def estimate_tokens(messages: Sequence[Any]) -> int:
    """About four characters a token, plus a few tokens of framing per message."""
    chars = 0
    for message in messages:
        if isinstance(message, dict):
            chars += len(_text_of(message.get("content"))) + len(str(message.get("name", "")))
    return math.ceil(chars / 4) + 4 * len(messages) + 3


def count_prompt_tokens(
    body: dict[str, Any], model: str, tokenizer: str | None = None
) -> tuple[int, str]:
    """Prompt tokens for ``model``, and how they were counted.

    In ``tokenizer`` (a candidate's ``tokenizer`` key, as the request path counts) when given,
    else the encoding the model's name implies; ``edgeproxy.tokens`` (exact for OpenAI's
    encodings, a labelled estimate otherwise) when it is installed; else about four characters a
    token.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0, "no messages"
    try:
        tokens = importlib.import_module("edgeproxy.tokens")
        encoding = tokenizer or tokens.encoding_for_model(model)
        counted = tokens.count_chat(body, encoding)
        n, exact = counted.tokens, counted.exact
    except Exception:  # not installed yet, or a body it cannot count: estimate instead
        return estimate_tokens(messages), "estimate: 4 characters a token"
    if not isinstance(n, int):
        return estimate_tokens(messages), "estimate: 4 characters a token"
    return n, f"{'exact' if exact else 'estimate'}: {encoding}"


def _prompt_in(body: dict[str, Any], encoding: str) -> int:
    """The prompt's tokens in ``encoding``, as task rules count them."""
    try:
        counted = importlib.import_module("edgeproxy.tokens").count_chat(body, encoding)
        return int(counted.tokens)
    except Exception:  # a body the counter refuses: estimate, as the request path does
        messages = body.get("messages")
        return estimate_tokens(messages if isinstance(messages, list) else [])


def _completion_tokens(body: dict[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def explain(
    policy: Policy,
    body: dict[str, Any],
    down: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
) -> Explanation:
    """``headers``: the request's headers by lower-case name (``x-edgeproxy-task``)."""
    model = str(body.get("model", ""))
    route = policy.route_for(model)
    if route is None:
        served: list[str] = []
        for name in policy.route_names:
            served.extend((name, *policy.routes[name].aliases))
        return Explanation(policy.source, policy.version, model, None, tuple(served))
    counts: dict[str, tuple[int, str]] = {}

    def counted(candidate: Candidate) -> tuple[int, str]:
        # By the candidate's tokenizer (the policy may set one its model's name does not imply).
        if candidate.tokenizer not in counts:
            counts[candidate.tokenizer] = count_prompt_tokens(
                body, candidate.upstream_model, candidate.tokenizer
            )
        return counts[candidate.tokenizer]

    def prompt_for(candidate: Candidate) -> int:
        return counted(candidate)[0]

    completion = _completion_tokens(body)
    verdicts = _verdicts(route, lambda c: prompt_for(c) + completion, down, body)
    first = route.chain[0] if route.chain else None
    prompt, method = counted(first) if first else count_prompt_tokens(body, model)
    notes: list[str] = []
    refused = route.context.overflow == "error" and any(
        "context window:" in r for v in verdicts for r in v.reasons
    )
    affinity = _affinity_note(route, body)
    if affinity:
        notes.append(affinity)
    if completion == 0:
        notes.append("the request sets no max_tokens: only the prompt is checked against windows")
    if route.auto is not None:
        notes.append(
            f"route {route.name!r} is an auto route: a running proxy puts the best candidate of "
            "its pool by the newest scorecard first, ranked fallbacks next, then the candidates "
            "above (GET /admin/auto, docs/auto.md)"
        )
    return Explanation(
        policy_source=policy.source,
        policy_version=policy.version,
        model=model,
        route=route.name,
        constraints=route.constraints(),
        prompt_tokens=prompt,
        completion_tokens=completion,
        token_method=method,
        max_attempts=route.max_attempts,
        verdicts=tuple(verdicts),
        notes=tuple(notes),
        route_settings={
            k: v for k, v in describe_route(route).items() if k not in ("chain", "excluded")
        },
        task=classify_now(
            policy.tasks, route, headers or {}, body, lambda encoding: _prompt_in(body, encoding)
        ),
        refused_overflow=refused,
    )


def _affinity_note(route: Route, body: dict[str, Any]) -> str:
    """Which equivalent candidate this request's prefix goes to (nothing in flight, all up)."""
    settings = route.affinity
    if settings is None:
        return ""
    if settings.spread == "random":
        return "affinity: spread at random over each group of equivalent candidates"
    prefix = prefix_hash(body, settings.prefix_messages)
    _, decisions = order(route.chain, settings, prefix, AffinityTable(), lambda _key: True)
    if not decisions:
        return "affinity: no two candidates of the chain are equivalent (nothing to order)"
    homes = ", ".join(f"{d.home} first of {len(d.group)}" for d in decisions)
    return f"affinity: this request's prefix goes to {homes} (the others follow it in rank order)"


def _compaction(route: Route, body: dict[str, Any], candidate: Candidate, limit: int) -> str | None:
    """What compaction does for ``candidate`` (None: it cannot fit the request)."""
    if limit <= 0:
        return None
    settings = route.context
    try:
        measured = measure(body, candidate.tokenizer)
    except Exception:  # a body the counter refuses: as the request path, estimate elsewhere
        return None
    least = floor(measured, settings, limit)
    if least.tokens > limit:
        return None
    summary = settings.summary_max_tokens if route.summarizer is not None else None
    layout = plan(measured, settings, limit, summary_tokens=summary)
    ran = ", ".join(layout.strategies) or "nothing to do"
    return f"compacted for it: ~{measured.total} -> ~{layout.tokens} of {limit} tokens ({ran})"


def _verdicts(
    route: Route,
    tokens_for: Callable[[Candidate], int],
    down: Sequence[str],
    body: dict[str, Any] | None = None,
) -> list[Verdict]:
    out: list[Verdict] = []
    attempt = 0
    chain = route.chain
    settings = route.affinity
    if settings is not None and body is not None and settings.spread == "prefix":
        prefix = prefix_hash(body, settings.prefix_messages)
        chain, _ = order(chain, settings, prefix, AffinityTable(), lambda _key: True)
    for candidate in chain:
        reasons: list[str] = []
        skip = False
        hit = next((d for d in down if matches_down(candidate, d)), None)
        if hit is not None:
            reasons.append(f"down (simulated by --down {hit})")
            skip = True
        window = candidate.context_window
        needed = tokens_for(candidate)
        compacted = None
        if window is not None and needed > window:
            reasons.append(f"context window: needs ~{needed} tokens, the model holds {window}")
            if route.context.overflow == "compact" and body is not None:
                room = _completion_tokens(body) or candidate.max_output_tokens
                compacted = _compaction(route, body, candidate, window - room)
                if compacted is None:
                    reasons.append("too long even compacted (context.strategies)")
            skip = skip or compacted is None
        if skip:
            out.append(Verdict(candidate.key, "skip", None, tuple(reasons)))
            continue
        reasons.append("up")
        if route.require_tags:
            reasons.append(f"residency ok ({format_tags(route.require_tags)})")
        if window is None:
            reasons.append("context window unknown (not checked)")
        elif compacted is not None:
            reasons.append(compacted)
        else:
            reasons.append(f"fits: ~{needed} of {window} tokens")
        if attempt >= route.max_attempts:
            reasons.append(f"not reached: max_attempts is {route.max_attempts}")
            out.append(Verdict(candidate.key, "reserve", None, tuple(reasons)))
            continue
        attempt += 1
        out.append(Verdict(candidate.key, "try", attempt, tuple(reasons)))
    for excluded in route.excluded:
        out.append(Verdict(excluded.key, "excluded", None, (excluded.reason,)))
    return out


def render_text(explanation: Explanation) -> str:
    e = explanation
    lines = [f"policy: {e.policy_source} (version {e.policy_version})"]
    if e.route is None:
        lines.append(f"request: model {e.model!r}")
        lines.append(f"outcome: {e.outcome}")
        return "\n".join(lines) + "\n"
    lines.append(f"request: model {e.model!r} -> route {e.route!r}")
    if isinstance(e.task, UnknownTask):
        lines.append(f"task: refused: {e.task.message}")
    elif e.task is not None:
        lines.append(f"task: {e.task.task} ({e.task.why})")
    lines.append(f"constraints: {e.constraints or 'none'}")
    about = "" if e.token_method.startswith("exact") else "~"
    tokens = f"prompt {about}{e.prompt_tokens} ({e.token_method}"
    tokens += f", for {e.verdicts[0].key})" if e.verdicts else ")"
    if e.completion_tokens:
        total = e.prompt_tokens + e.completion_tokens
        tokens += f" + max_tokens {e.completion_tokens} = {about}{total}"
    lines.append(f"tokens: {tokens}")
    lines.append(f"max_attempts: {e.max_attempts}")
    lines.append("")
    rows = [("#", "candidate", "verdict", "why")]
    for v in e.verdicts:
        label = f"try {v.attempt}" if v.verdict == "try" else v.verdict
        rows.append((str(len(rows)), v.key, label, "; ".join(v.reasons)))
    lines.extend(format_table(rows))
    lines.append("")
    lines.extend(f"note: {n}" for n in e.notes)
    lines.append(f"outcome: {e.outcome}")
    return "\n".join(lines) + "\n"


def format_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns; the last column is not padded."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        out.append("  ".join([*cells, row[-1]]).rstrip())
    return out
