"""The contract every provider wire keeps, run against every registered wire.

Each wire is driven exactly as the request path drives it (``upstreams.send``, the relay's
``open_stream``, the prober's ``http_probe``) against a simulator speaking that wire on its own
port: an answer and a stream become OpenAI-shaped, failures are classified so that failover
works (and never quote the key), a client error becomes an OpenAI error body, and the wire's
health probe passes on its own provider and fails where its endpoint is missing. A new wire is
covered by registering it (and teaching the simulator to speak it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import partial
from types import MappingProxyType

import orjson
import pytest

from edgeproxy.failure import AttemptFailure, FailureClass
from edgeproxy.resilience.prober import ProbeTarget, http_probe
from edgeproxy.server.upstream_stream import StreamOptions, open_stream
from edgeproxy.sim import Fault, SimConfig, SimProvider
from edgeproxy.snapshot import Candidate, ProbeMode
from edgeproxy.snapshot.wire import UpstreamWire
from edgeproxy.upstreams.http1 import Http1Pool
from edgeproxy.upstreams.send import send
from edgeproxy.wires import UPSTREAM_WIRES

KEY = "sk-contract-secret-0123456789"
# 16: the Responses API takes no smaller max_output_tokens (a smaller one skips that wire).
BODY = {"model": "m", "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 16}

WIRES = sorted(UPSTREAM_WIRES)


@pytest.fixture(params=WIRES)
def wire(request: pytest.FixtureRequest) -> UpstreamWire:
    return UPSTREAM_WIRES[request.param]


@pytest.fixture
async def sim(wire: UpstreamWire) -> AsyncIterator[SimProvider]:
    provider = SimProvider(
        SimConfig(name="contract", ttft=0, tokens_per_second=0, require_api_key=KEY, wire=wire.name)  # type: ignore[arg-type]
    )
    await provider.start()
    yield provider
    await provider.stop()


def candidate(wire: UpstreamWire, base_url: str, key: str = KEY, **extra: object) -> Candidate:
    return Candidate(
        provider="p",
        region="r",
        model="m",
        upstream_model="upstream-m",
        wire=wire,
        base_url=base_url,
        chat_url=wire.endpoint_url(base_url, {}),
        context_window=None,
        tags=MappingProxyType({}),
        # The key as most policies write it; each wire sends it in its own header.
        headers=MappingProxyType({"Authorization": f"Bearer {key}"}),
        **extra,  # type: ignore[arg-type]
    )


async def attempt(pool: Http1Pool, target: Candidate, *, stream: bool) -> object:
    body = target.wire.request_body(dict(BODY, stream=stream), target)
    return await send(
        pool, target, body, stream=stream, connect_timeout=1, request_id="r", extra_headers={}
    )


async def test_an_answer_becomes_a_chat_completion(
    wire: UpstreamWire, sim: SimProvider, make_pool: Callable[..., Http1Pool]
) -> None:
    target = candidate(wire, sim.url)
    response = await attempt(make_pool(), target, stream=False)
    data = await response.read(1 << 20)  # type: ignore[attr-defined]
    response.release()  # type: ignore[attr-defined]
    raw, parsed = wire.answer(data)
    assert orjson.loads(raw) == parsed
    assert parsed["object"] == "chat.completion"
    assert parsed["model"] == "upstream-m"  # the upstream model name was sent
    assert parsed["choices"][0]["message"]["content"]
    assert parsed["usage"]["completion_tokens"] > 0


async def test_a_stream_becomes_openai_sse(
    wire: UpstreamWire, sim: SimProvider, make_pool: Callable[..., Http1Pool]
) -> None:
    target = candidate(wire, sim.url)
    response = await attempt(make_pool(), target, stream=True)
    translator = wire.stream(include_usage=False)
    options = StreamOptions(translator=translator) if translator is not None else StreamOptions()
    stream, first = await open_stream(response, 5.0, options)  # type: ignore[arg-type]
    out = [first]
    while (chunk := await stream.read(5.0, FailureClass.IDLE_TIMEOUT)) is not None:
        out.append(chunk)
    stream.release()
    text = b"".join(out)
    assert text.startswith(b"data: {") and text.endswith(b"data: [DONE]\n\n")
    assert stream.progress.finished and stream.progress.text.chars > 0
    assert stream.progress.usage is None or stream.progress.usage["completion_tokens"] > 0


@pytest.mark.parametrize(
    ("fault", "expected", "retry_after"),
    [
        (Fault(mode="status", status=429, retry_after=7), FailureClass.RATE_LIMITED, 7.0),
        (Fault(mode="status", status=503), FailureClass.SERVER_ERROR, None),
        (Fault(mode="status", status=500), FailureClass.SERVER_ERROR, None),
        (Fault(mode="malformed"), FailureClass.MALFORMED, None),
    ],
    ids=["429", "503", "500", "malformed"],
)
async def test_failures_are_classified_for_failover(
    wire: UpstreamWire,
    sim: SimProvider,
    make_pool: Callable[..., Http1Pool],
    fault: Fault,
    expected: FailureClass,
    retry_after: float | None,
) -> None:
    sim.set_fault(fault)
    target = candidate(wire, sim.url)
    with pytest.raises(AttemptFailure) as info:
        response = await attempt(make_pool(), target, stream=False)
        wire.answer(await response.read(1 << 20))  # type: ignore[attr-defined]
    assert info.value.failure is expected
    assert info.value.may_fail_over
    assert info.value.retry_after == retry_after


async def test_overload_fails_over(
    wire: UpstreamWire, sim: SimProvider, make_pool: Callable[..., Http1Pool]
) -> None:
    sim.set_fault(Fault(mode="status", status=529))
    with pytest.raises(AttemptFailure) as info:
        await attempt(make_pool(), candidate(wire, sim.url), stream=False)
    assert info.value.failure in (FailureClass.OVERLOADED, FailureClass.SERVER_ERROR)
    assert info.value.may_fail_over


async def test_an_in_stream_error_is_a_failure(
    wire: UpstreamWire, sim: SimProvider, make_pool: Callable[..., Http1Pool]
) -> None:
    sim.set_fault(Fault(mode="overloaded", after_tokens=2))
    response = await attempt(make_pool(), candidate(wire, sim.url), stream=True)
    translator = wire.stream(include_usage=False)
    options = StreamOptions(translator=translator) if translator is not None else StreamOptions()
    with pytest.raises(AttemptFailure) as info:
        stream, _ = await open_stream(response, 5.0, options)  # type: ignore[arg-type]
        while await stream.read(5.0, FailureClass.IDLE_TIMEOUT) is not None:
            pass
    assert info.value.may_fail_over


async def test_a_wrong_key_is_auth_rejected_and_fails_over(
    wire: UpstreamWire, sim: SimProvider, make_pool: Callable[..., Http1Pool]
) -> None:
    """The proxy's key, not the client's request: failed over, never handed back as is."""
    wrong = candidate(wire, sim.url, key="sk-wrong-key-0123456789")
    with pytest.raises(AttemptFailure) as info:
        await attempt(make_pool(), wrong, stream=False)
    failure = info.value
    assert failure.failure is FailureClass.AUTH_REJECTED and failure.may_fail_over
    assert failure.status in (400, 401)  # Gemini answers a wrong key 400 API_KEY_INVALID
    assert KEY not in str(failure)


async def test_a_client_error_is_an_openai_error_body_without_the_key(
    wire: UpstreamWire, sim: SimProvider, make_pool: Callable[..., Http1Pool]
) -> None:
    sim.set_fault(Fault(mode="status", status=400))
    with pytest.raises(AttemptFailure) as info:
        await attempt(make_pool(), candidate(wire, sim.url), stream=False)
    failure = info.value
    assert failure.failure is FailureClass.CLIENT_ERROR and not failure.may_fail_over
    assert failure.status == 400
    body, content_type = wire.client_error_body(failure, "req-1")
    error = orjson.loads(body)["error"]
    assert content_type == "application/json" and error["message"]
    assert KEY not in str(failure) and KEY.encode() not in body


async def test_a_refused_connection_is_a_connect_error(
    wire: UpstreamWire, sim: SimProvider, make_pool: Callable[..., Http1Pool]
) -> None:
    sim.set_fault(Fault(mode="refuse"))
    with pytest.raises(AttemptFailure) as info:
        await attempt(make_pool(), candidate(wire, sim.url), stream=False)
    assert info.value.failure is FailureClass.CONNECT_ERROR


async def test_a_plain_request_is_never_refused(wire: UpstreamWire) -> None:
    assert wire.refusal(BODY) is None


def probe_target(target: Candidate, mode: ProbeMode, url: str | None = None) -> ProbeTarget:
    wire = target.wire
    return ProbeTarget(
        target.base_url,
        (target.key,),
        mode,
        request=wire.probe(target, mode, url),
        verdict=partial(wire.probe_verdict, mode),
    )


@pytest.mark.parametrize("mode", ["models", "completion"])
async def test_the_probe_passes_on_its_own_provider(
    wire: UpstreamWire, sim: SimProvider, make_pool: Callable[..., Http1Pool], mode: ProbeMode
) -> None:
    probe = http_probe(make_pool())
    result = await probe(probe_target(candidate(wire, sim.url), mode), 2.0)
    assert result.ok is True, result.detail
    sim.set_fault(Fault(mode="status", status=503))
    result = await probe(probe_target(candidate(wire, sim.url), mode), 2.0)
    assert result.ok is (mode == "models")  # /models is never faulted


@pytest.mark.parametrize("mode", ["models", "completion"])
async def test_a_probe_with_a_refused_key_is_down(
    wire: UpstreamWire, sim: SimProvider, make_pool: Callable[..., Http1Pool], mode: ProbeMode
) -> None:
    """The probe sends the proxy's key: refused, it keeps an ``auth_rejected`` ejection in
    force (a passing probe would end it early)."""
    wrong = candidate(wire, sim.url, key="sk-wrong-key-0123456789")
    result = await http_probe(make_pool())(probe_target(wrong, mode), 2.0)
    assert result.ok is False, result.detail


async def test_a_completion_probe_fails_where_the_wire_is_not_served(
    wire: UpstreamWire, make_pool: Callable[..., Http1Pool]
) -> None:
    """The bug this suite was written for: an Anthropic provider's completion probe was sent in
    OpenAI's shape to /chat/completions, and the 404 counted as reachable."""
    other = next(name for name in WIRES if name != wire.name)
    provider = SimProvider(
        SimConfig(name="other", ttft=0, tokens_per_second=0, require_api_key=KEY, wire=other)  # type: ignore[arg-type]
    )
    await provider.start()
    try:
        probe = http_probe(make_pool())
        result = await probe(probe_target(candidate(wire, provider.url), "completion"), 2.0)
    finally:
        await provider.stop()
    assert result.ok is False


async def test_a_probe_url_elsewhere_never_gets_the_key(wire: UpstreamWire) -> None:
    target = candidate(wire, "http://provider.example/v1")
    elsewhere = wire.probe(target, "url", "http://status.example/health")
    assert elsewhere.headers == {}
    own = wire.probe(target, "url", "http://provider.example/v1/health")
    assert any(KEY in value for value in own.headers.values())
    assert KEY not in repr(own)
