"""One simulated OpenAI-compatible provider: an aiohttp server with switchable faults."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import replace
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from . import embeddings, gemini, netio, openai_responses, wire
from .anthropic import authorized as anthropic_authorized
from .anthropic import serve_messages
from .completion import Completion, plan_completion
from .config import SimConfig
from .errors import error_response
from .faults import Fault
from .gate import FaultGate
from .listener import Listener
from .play import Player
from .prompt_cache import PromptCacheModel
from .request import BadRequest, ChatRequest, parse_chat_request
from .respond import send_body, send_json, send_stream
from .stats import SimStats

log = logging.getLogger(__name__)

_STOP_GRACE = 2.0  # seconds stop() waits for handler tasks after killing their connections


class SimProvider:
    """Speaks one wire (``POST /v1/chat/completions`` and ``/v1/embeddings``, ``/v1/messages``,
    Gemini's ``/v1/models/{model}:{method}``, or ``POST /v1/responses`` and ``/v1/embeddings``),
    ``GET /v1/models`` and ``GET /health``.

    Faults apply to chat completions only, so health checks and model listing keep working
    unless the fault is ``refuse`` (which takes the whole port down).
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.stats = SimStats()
        self._gate = FaultGate(config.seed)
        # The market: per-model profiles (changed live by the control API) and the answer book.
        self.player = Player(config)
        self._models: dict[str, None] = dict.fromkeys(config.models)
        # The last request bodies this sim accepted (raw bytes), for tests to read what a
        # provider was actually sent (e.g. a compacted conversation).
        self.received: deque[bytes] = deque(maxlen=16)
        ttl = config.prompt_cache_ttl
        self.prompt_cache = PromptCacheModel(ttl) if ttl is not None else None
        self._host = "127.0.0.1"
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 = ephemeral) and return the bound port."""
        if self._runner is not None:
            raise RuntimeError(f"sim {self.config.name!r} already started")
        self._host = host
        self._stopping = asyncio.Event()
        # handler_cancellation: a client that goes away cancels its hanging/stalled handler,
        # so abandoned requests never pile up as tasks.
        runner = web.AppRunner(
            self._build_app(), handle_signals=False, access_log=None, handler_cancellation=True
        )
        await runner.setup()
        assert runner.server is not None
        listener = Listener(runner.server, host, port)
        try:
            listener.open()
            await listener.started()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._listener = runner, listener
        if self._gate.fault.mode == "refuse":
            self._refuse()
        return listener.port

    async def stop(self) -> None:
        """Close the port, kill every connection (hanging ones included) and await handlers."""
        runner, listener = self._runner, self._listener
        if runner is None or listener is None:
            return
        self._runner = self._listener = None
        self._stopping.set()
        listener.close()
        self._abort_connections(runner)
        await runner.cleanup()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=_STOP_GRACE)
        await listener.aclose()

    async def __aenter__(self) -> SimProvider:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- faults ------------------------------------------------------------------------------

    @property
    def fault(self) -> Fault:
        return self._gate.fault

    def set_fault(self, fault: Fault) -> None:
        """Switch fault now; healing from ``refuse`` listens again on the same port.

        Raises OSError (and keeps refusing) if that port was taken meanwhile.
        """
        if self._listener is not None and fault.mode != "refuse":
            # Re-listen before the switch, so a failure leaves the sim in a consistent state.
            self._listener.open()  # no-op unless refusing
        self._gate.set(fault)
        if self._listener is not None and fault.mode == "refuse":
            self._refuse()
        log.info("sim %s fault set to %s", self.config.name, fault.to_dict())

    def clear_fault(self) -> None:
        self.set_fault(Fault())

    def _refuse(self) -> None:
        assert self._listener is not None and self._runner is not None
        self._listener.close()
        # A downed process also drops pooled keep-alive connections; without this a client's
        # connection pool would keep reaching the "refusing" provider.
        self._abort_connections(self._runner)

    @staticmethod
    def _abort_connections(runner: web.AppRunner) -> None:
        if runner.server is not None:
            for handler in runner.server.connections:
                netio.abort_transport(handler.transport)

    # -- addressing ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._listener.port if self._listener is not None else 0

    @property
    def base_url(self) -> str:
        """``http://host:port`` without the ``/v1`` suffix."""
        host = self._host if self._host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self.base_url + "/v1"

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {
            "name": self.config.name,
            "url": self.url,
            "fault": self.fault.to_dict(),
            "stats": self.stats.to_dict(),
        }
        if self.player.profiles:
            described["profiles"] = {
                model: profile.to_dict() for model, profile in self.player.profiles.items()
            }
        return described

    # -- HTTP --------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.on_response_prepare.append(self._stamp)
        if self.config.wire == "openai":
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_post("/v1/embeddings", self._embeddings)
            app.router.add_get("/v1/models", self._list_models)
        elif self.config.wire == "anthropic":
            app.router.add_post("/v1/messages", self._messages)
            app.router.add_get("/v1/models", self._list_models)
        elif self.config.wire == "openai_responses":
            app.router.add_post("/v1/responses", self._responses)
            app.router.add_post("/v1/embeddings", self._embeddings)
            app.router.add_get("/v1/models", self._list_models)
        else:
            app.router.add_post("/v1/models/{call}", self._gemini)
            app.router.add_get("/v1/models", self._gemini_models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/_sim/stats", self._stats)
        return app

    async def _stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-sim-name"] = self.config.name

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.describe(), dumps=_dumps)

    async def _list_models(self, request: web.Request) -> web.Response:
        # Each wire's own auth header (Anthropic's model list takes x-api-key).
        wire_auth = anthropic_authorized if self.config.wire == "anthropic" else None
        if not (wire_auth(self, request) if wire_auth else self._authorized(request)):
            return _unauthorized()
        data = [
            {"id": model, "object": "model", "created": 0, "owned_by": self.config.name}
            for model in self._models
        ]
        return web.json_response({"object": "list", "data": data}, dumps=_dumps)

    def _authorized(self, request: web.Request) -> bool:
        expected = self.config.require_api_key
        if expected is None:
            return True
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected):
            return True
        return hmac.compare_digest(request.headers.get("api-key", ""), expected)

    async def _park(self) -> None:
        await self._stopping.wait()

    def _track(self, request: web.Request) -> None:
        # Both aiohttp's connection task and our handler task are awaited by stop(), so a
        # stopped simulator leaves no pending tasks behind.
        for task in (asyncio.current_task(), request.task):
            if task is not None and not task.done():
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._served(request, self._chat_inner(request))

    async def _chat_inner(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault, early = await self.opening(request)
        if early is not None:
            return early

        if not self._authorized(request):
            self.stats.record("unauthorized")
            return _unauthorized()
        try:
            chat = parse_chat_request(body)
        except BadRequest as exc:
            self.stats.record("bad_request")
            return error_response(400, code=exc.code, message=exc.message, param=exc.param)
        if fault is None:
            self.stats.record("ok")
        self.received.append(body)
        if (
            fault is not None
            and fault.mode == "echo_key"
            and not (chat.stream and fault.after_tokens)
        ):
            return error_response(
                fault.status,
                code=fault.error_code or "invalid_api_key",
                message=wire.echo_key_message(request.headers),
            )

        self._models.setdefault(chat.model, None)
        completion, ttft, interval, fault = self.plan(chat, body, fault)
        if not chat.stream and fault is not None and fault.mode == "overloaded":
            return error_response(529)  # no stream to break: overloaded before the answer
        if not chat.stream:
            delay = ttft + interval * completion.completion_tokens
            return await send_json(
                request,
                completion,
                delay=delay,
                fault=fault,
                park=self._park,
                reports_usage=self.config.reports_usage,
            )

        self.stats.streams_started += 1
        response, completed = await send_stream(
            request,
            completion,
            ttft=ttft,
            interval=interval,
            include_usage=chat.include_usage and self.config.reports_usage,
            fault=fault,
            park=self._park,
        )
        if completed:
            self.stats.streams_completed += 1
        return response

    def plan(
        self, chat: ChatRequest, body: bytes, fault: Fault | None
    ) -> tuple[Completion, float, float, Fault | None]:
        """The answer to ``chat``: its completion, first-token delay, seconds per token, and the
        fault it meets (the gate's; else a profiled model's own failure, ``sim/play.py``)."""
        played = self.player.play(chat, body)
        if played is None:
            completion = plan_completion(self.config, chat)
            ttft, interval = self.config.ttft, self.config.token_interval
        else:
            completion, ttft, interval = played.completion, played.ttft, played.interval
            if fault is None and played.fault is not None:
                self.stats.record("profile_error")
                fault = played.fault
        if self.prompt_cache is not None:
            try:
                cached = self.prompt_cache.apply(self.config.wire, orjson.loads(body))
            except orjson.JSONDecodeError:
                cached = None
            if cached is not None:
                completion = replace(
                    completion,
                    prompt_tokens=cached.prompt_tokens,
                    cached_tokens=cached.read,
                    cache_write_tokens=cached.written,
                )
        prefill = self.config.prefill_tokens_per_second
        if prefill > 0:
            ttft += (completion.prompt_tokens - completion.cached_tokens) / prefill
        if fault is not None and fault.mode == "slow_first_token":
            ttft = fault.ttft
        return completion, ttft, interval, fault

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/messages``: the Anthropic wire (sim/anthropic.py), same faults and stats."""
        self._track(request)
        self.stats.requests_total += 1
        self.stats.in_flight += 1
        try:
            return await serve_messages(self, request)
        except ConnectionResetError:
            self.stats.client_disconnects += 1
            return netio.placeholder_response()
        finally:
            self.stats.in_flight -= 1

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/models/{model}:{method}``: the Gemini wire (sim/gemini.py)."""
        return await self._served(request, gemini.serve_models(self, request))

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/responses``: OpenAI's Responses API (sim/openai_responses.py)."""
        return await self._served(request, openai_responses.serve_responses(self, request))

    async def _gemini_models(self, request: web.Request) -> web.Response:
        return await gemini.list_models(self, request)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/embeddings`` on the OpenAI wire (sim/embeddings.py), same faults."""
        return await self._served(request, self._embeddings_inner(request))

    async def _served(
        self, request: web.Request, answer: Coroutine[Any, Any, web.StreamResponse]
    ) -> web.StreamResponse:
        """Counts, tracking and a client that leaves, around one request's handler."""
        self._track(request)
        self.stats.requests_total += 1
        self.stats.in_flight += 1
        try:
            return await answer
        except ConnectionResetError:
            # The client left mid-answer (e.g. an SDK giving up on a malformed event); without
            # this aiohttp would log a server error for what is ordinary client behaviour.
            self.stats.client_disconnects += 1
            return netio.placeholder_response()
        finally:
            self.stats.in_flight -= 1

    async def _embeddings_inner(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault, early = await self.opening(request)
        if early is not None:
            return early
        if not self._authorized(request):
            self.stats.record("unauthorized")
            return _unauthorized()
        if fault is not None and fault.mode == "overloaded":
            return error_response(529)
        try:
            answer = embeddings.openai_answer(
                orjson.loads(body),
                seed=self.config.seed,
                default_dimensions=self.config.embedding_dimensions,
            )
        except orjson.JSONDecodeError:
            self.stats.record("bad_request")
            return error_response(400, message="We could not parse the JSON body of your request.")
        except embeddings.BadEmbeddings as exc:
            self.stats.record("bad_request")
            return error_response(400, message=exc.message, param=exc.param)
        if not self.config.reports_usage:
            del answer["usage"]
        if fault is None:
            self.stats.record("ok")
        self.received.append(body)
        self._models.setdefault(str(answer["model"]), None)
        return await send_body(request, orjson.dumps(answer), fault=fault, park=self._park)

    async def opening(
        self,
        request: web.Request,
        status_error: Callable[[Fault], web.StreamResponse] | None = None,
    ) -> tuple[Fault | None, web.StreamResponse | None]:
        """What every endpoint does before it answers: a refusing (or stopping) sim resets the
        connection; otherwise a fault is drawn and, when it strikes before the answer, answers
        instead (a ``status`` fault in the wire's own error shape, ``status_error``, else
        OpenAI's). Returns the fault drawn and that early answer, or None to go on."""
        if self._gate.fault.mode == "refuse" or self._stopping.is_set():
            # Raced with refuse/stop on an already accepted connection: behave like a dead port.
            self.stats.record("refuse")
            netio.reset_connection(request)
            return None, netio.placeholder_response()
        fault = self._gate.draw()
        if fault is None:
            return None, None
        self.stats.record(fault.mode)
        if fault.mode == "status" and status_error is not None:
            return fault, status_error(fault)
        return fault, await self._early_fault(request, fault)

    async def _early_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """Faults that strike before the model answers; None lets the request proceed."""
        if fault.mode == "status":
            return error_response(
                fault.status, code=fault.error_code, retry_after=fault.retry_after
            )
        if fault.mode == "reset":
            netio.reset_connection(request)
            return netio.placeholder_response()
        if fault.mode == "hang":
            await self._park()
            netio.abort_transport(request.transport)
            return netio.placeholder_response()
        return None


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


def _unauthorized() -> web.Response:
    return error_response(401, code="invalid_api_key")
