"""The proxy's own configuration refused by an upstream (``auth_rejected``: its key;
``model_not_found``: the policy's model or base URL), on the fake clock with the real breakers,
budget and backoff: the request fails over at once, the same candidate is never retried, the
candidate is ejected for ``quota_ejection`` (one ERROR line per ejection, never the key), a
health probe ends a key ejection only when it passes and never a model one; and the tables that
decide the class (``classify_status`` for the OpenAI wire, the probe verdicts of every wire)."""

from __future__ import annotations

import logging

import pytest
from test_attempt_loop import A, B, Events, Script, fail, world

from edgeproxy.events import AttemptEnded, SkipReason
from edgeproxy.failure import MISCONFIGURED, FailureClass, classify_status
from edgeproxy.resilience.backoff import Action, decide
from edgeproxy.resilience.breaker import Ejection
from edgeproxy.snapshot import BreakerSettings
from edgeproxy.snapshot.settings import NOT_COUNTED
from edgeproxy.wires import upstream_wire
from edgeproxy.wires.openai_chat import WIRE as OPENAI

AUTH, MODEL = FailureClass.AUTH_REJECTED, FailureClass.MODEL_NOT_FOUND
SECRET = "sk-proj-SeCrEt0123456789abcdefghij"


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, "invalid_api_key", AUTH),
        (401, None, AUTH),
        (403, "unsupported_country_region_territory", AUTH),
        (404, "model_not_found", MODEL),
        (404, None, MODEL),  # a wrong base URL: an HTML 404
        (400, "model_not_found", MODEL),  # some OpenAI-compatible servers answer it 400
        (400, "invalid_api_key", AUTH),
        # What the request itself carries is still the client's: passed through as is.
        (400, "invalid_request_error", FailureClass.CLIENT_ERROR),
        (400, None, FailureClass.CLIENT_ERROR),
        (413, None, FailureClass.CLIENT_ERROR),
        (422, None, FailureClass.CLIENT_ERROR),
        (400, "context_length_exceeded", FailureClass.CONTEXT_LENGTH),
        (429, "insufficient_quota", FailureClass.QUOTA_EXHAUSTED),
        # A 5xx or a 3xx is never a misconfiguration, whatever code its body claims.
        (500, "invalid_api_key", FailureClass.SERVER_ERROR),
        (503, "model_not_found", FailureClass.SERVER_ERROR),
        (302, "invalid_api_key", FailureClass.REDIRECT),
    ],
)
def test_the_openai_wire_classifies_the_proxys_own_configuration(
    status: int, code: str | None, expected: FailureClass
) -> None:
    assert classify_status(status, code) is expected
    body = b'{"error": {"message": "x", "code": "%s"}}' % code.encode() if code else b"<html>"
    failure = OPENAI.failure(status, body, {}, "application/json")
    assert failure.failure is expected
    assert failure.may_fail_over is (expected is not FailureClass.CLIENT_ERROR)


def test_both_classes_count_against_the_candidate_and_are_never_retried_on_it() -> None:
    assert not MISCONFIGURED & NOT_COUNTED
    w = world()
    for failure in MISCONFIGURED:
        alone = decide(
            failure,
            retry_after=None,
            retries_on_candidate=0,
            next_candidate=False,
            attempts_left=3,
            remaining=60.0,
            budget_allows=True,
            backoff=w.backoff,
        )
        assert alone.action is Action.GIVE_UP and str(failure) in alone.reason


@pytest.mark.parametrize("failure", [AUTH, MODEL])
async def test_a_refusal_fails_over_at_once_and_ejects_the_candidate(
    failure: FailureClass, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    w = world()
    events = Events()
    refused = fail(failure, status=401 if failure is AUTH else 404, code="x")
    script = Script(w.clock, {A.key: refused, B.key: "b"})
    outcome = await w.loop((A, B), events, quota_ejection=3600.0).run(script)
    assert outcome.served == B and script.calls == [A.key, B.key]
    assert w.clock.monotonic() == 1000.0  # no backoff before the failover
    assert [e.outcome for e in events.of(AttemptEnded)] == [str(failure), "ok"]
    breaker = w.breakers.get(A.key)
    assert breaker.state == "open"
    assert breaker.reopen_at == 4600.0  # quota_ejection, not capped at max_ejection_time (300 s)

    # The next request does not touch it: skipped with an open breaker, served by B.
    again = Script(w.clock, {A.key: "never asked", B.key: "b"})
    second = await w.loop((A, B)).run(again)
    assert again.calls == [B.key] and second.served == B
    assert [s.reason for s in second.skipped] == [SkipReason.BREAKER_OPEN]

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and A.key in errors[0].getMessage()
    wanted = "rejected the proxy's key" if failure is AUTH else "model not found"
    assert wanted in errors[0].getMessage()


async def test_the_same_ejection_met_by_requests_in_flight_is_said_once_and_not_extended(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    w = world()
    refused = fail(AUTH, status=401)
    await w.loop((A, B), quota_ejection=3600.0).run(Script(w.clock, {A.key: refused, B.key: "b"}))
    w.clock.advance(5.0)
    breaker = w.breakers.get(A.key)
    breaker.eject(3600.0, Ejection.AUTH_REJECTED)  # a request sent before the ejection
    assert breaker.reopen_at == 4600.0
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


async def test_a_rejected_key_is_out_until_a_probe_passes() -> None:
    """The probe sends the same key: while it is refused the probe fails and the ejection
    stands; once the key works a passing probe lets one trial through."""
    w = world(breaker=BreakerSettings(max_ejection_time=300.0))
    refused = fail(AUTH, status=401)
    await w.loop((A, B), quota_ejection=3600.0).run(Script(w.clock, {A.key: refused, B.key: "b"}))
    breaker = w.breakers.get(A.key)
    w.clock.advance(1000.0)  # past max_ejection_time: a capped ejection would be over
    assert breaker.state == "open"
    breaker.probe_succeeded()
    assert breaker.state == "half_open"
    # The trial is refused again: out for the long time again, said again.
    trial = Script(w.clock, {A.key: refused, B.key: "b"})
    await w.loop((A, B), quota_ejection=3600.0).run(trial)
    assert trial.calls == [A.key, B.key]
    assert breaker.state == "open" and breaker.reopen_at == w.clock.monotonic() + 3600.0


async def test_a_missing_model_is_held_a_probe_cannot_see_it() -> None:
    w = world()
    missing = fail(MODEL, status=404)
    await w.loop((A, B), quota_ejection=3600.0).run(Script(w.clock, {A.key: missing, B.key: "b"}))
    breaker = w.breakers.get(A.key)
    breaker.probe_succeeded()  # /models answers fine after a model is retired
    assert breaker.state == "open" and breaker.held
    w.clock.advance(3600.0)
    assert breaker.state == "half_open"  # the ejection's end lets one trial in


async def test_the_last_candidate_refused_gives_up_without_a_retry() -> None:
    w = world()
    script = Script(w.clock, {A.key: fail(AUTH, status=401), B.key: fail(MODEL, status=404)})
    outcome = await w.loop((A, B), quota_ejection=3600.0).run(script)
    assert outcome.served is None and script.calls == [A.key, B.key]
    assert "model_not_found is not retried on the same candidate" in outcome.stopped_because
    assert w.breakers.get(A.key).state == w.breakers.get(B.key).state == "open"


async def test_the_error_line_never_carries_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    w = world()
    quoted = fail(AUTH, status=401, body=f"Incorrect API key provided: {SECRET}".encode())
    await w.loop((A, B)).run(Script(w.clock, {A.key: quoted, B.key: "b"}))
    said = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "rejected the proxy's key" in said and SECRET not in said


@pytest.mark.parametrize("wire", ["openai", "anthropic", "gemini"])
def test_the_probe_verdicts_keep_a_refused_key_out(wire: str) -> None:
    """models/completion send the key to the provider's own URL: a 401/403 is down there. A
    free probe's 404 is still reachable (Azure's deployment URLs list no models), a completion
    probe's is down; a ``url`` probe may be anywhere and keyless: any 4xx is reachable."""
    verdict = upstream_wire(wire).probe_verdict
    for status in (401, 403):
        assert verdict("models", status) is False
        assert verdict("completion", status) is False
        assert verdict("url", status) is True
    assert verdict("models", 404) is True
    assert verdict("completion", 404) is False
    assert verdict("url", 404) is True
    assert verdict("models", 429) is None and verdict("models", 200) is True
    assert verdict("models", 400) is (wire != "gemini")  # Gemini's refused key is a 400
