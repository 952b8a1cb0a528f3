"""Rust hot path of edgeproxy (built from rust/edgeproxy-py): SSE parsing and the relay's per-chunk
checks, exact token counting, the prompt-hash cache, stream translation between wires and task
classification. Errors raised here share the root ``EdgeProxyError`` with the Python ones
(``edgeproxy.errors``)."""

from typing import final

__all__ = [
    "AnthropicToOpenAIStream",
    "CacheError",
    "CacheStore",
    "ChatStreamScanner",
    "ChunkScan",
    "EdgeProxyError",
    "OpenAIToAnthropicStream",
    "SseError",
    "SseEvent",
    "SseParser",
    "TaskError",
    "TaskModel",
    "TextPattern",
    "TokenCount",
    "TokenizerError",
    "TranslationError",
    "__version__",
    "cache_key",
    "canonical_request",
    "count_chat_tokens",
    "count_tokens",
    "count_tokens_up_to",
    "encode_sse",
    "preload_encoding",
    "token_table",
    "train_task_model",
]

__version__: str
"""Version of the Rust crate (CARGO_PKG_VERSION)."""

class EdgeProxyError(Exception):
    """Root of edgeproxy's exception tree (Rust and Python errors alike)."""

class SseError(EdgeProxyError):
    """A Server-Sent Events stream could not be parsed (e.g. an event over the size limit)."""

@final
class SseEvent:
    """One dispatched Server-Sent Event (immutable, comparable, hashable)."""

    @property
    def event(self) -> str:
        """The event type: the block's last ``event`` field, ``"message"`` if none."""
    @property
    def data(self) -> str:
        """The ``data`` field values joined with ``"\\n"``."""
    @property
    def id(self) -> str:
        """The last event ID at dispatch (persists across events); ``""`` if none."""
    @property
    def retry(self) -> int | None:
        """Reconnection time (ms) from a ``retry`` field seen since the previous event."""
    def __new__(
        cls, data: str, event: str = "message", id: str = "", retry: int | None = None
    ) -> SseEvent:
        """Build an event by hand (tests, fakes); the parser builds them while parsing."""
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class SseParser:
    """Incremental SSE parser following the WHATWG event-stream rules.

    Feed it network chunks in any split: the events are the same. An event not
    terminated by a blank line is never returned; ``pending`` tells that the stream
    ended mid-event. One line, or the data of one event, over ``max_event_bytes``
    raises ``SseError``, and every later ``feed`` raises it again.
    """

    def __new__(cls, max_event_bytes: int = 16777216) -> SseParser: ...
    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Parse one chunk; return the events it completed (GIL released for chunks >= 16 KiB)."""
    @property
    def pending(self) -> bool:
        """True when the stream so far ended mid-event (partial line or undispatched fields)."""
    @property
    def last_event_id(self) -> str:
        """The last event ID as of the last blank line (what a client sends as Last-Event-ID)."""
    @property
    def retry(self) -> int | None:
        """The reconnection time (ms) set by the last valid ``retry`` field, if any."""
    @property
    def max_event_bytes(self) -> int:
        """The size limit given at construction."""

def encode_sse(data: str, event: str | None = None) -> bytes:
    """Serialise one event: ``event: X`` when given, one ``data:`` line per line of ``data``.

    ``data`` is split on ``\\n``, ``\\r\\n`` and ``\\r``; CR/LF are dropped from ``event``.
    ``SseParser`` parses the result back to the same event (line ends become ``\\n``).
    """

# ---- OpenAI-wire stream relay (rust/edgeproxy-core/src/relay.rs) ----

@final
class ChunkScan:
    """What one upstream chunk held (flags are about this chunk's events only)."""

    @property
    def out(self) -> bytes:
        """Bytes for the client: the chunk's events re-encoded as ``data: ...``, never ``[DONE]``
        (and not to be written when the chunk failed)."""
    @property
    def done(self) -> bool:
        """The chunk held ``[DONE]`` (later events are dropped)."""
    @property
    def started(self) -> bool:
        """Something of the answer arrived: delta content, tool/function call, refusal, reasoning,
        a finish_reason, a non-empty usage object, or ``[DONE]``."""
    @property
    def finished(self) -> bool:
        """A choice carried a finish_reason."""
    @property
    def tool_calls(self) -> bool:
        """A delta carried tool_calls or a function_call."""
    @property
    def multiple_choices(self) -> bool:
        """A choice had an index other than 0."""
    @property
    def events(self) -> int:
        """JSON events checked (a continuation's dropped role chunk included; not ``[DONE]``)."""
    @property
    def usage(self) -> str | None:
        """The last non-empty usage object as the upstream sent it (JSON text), if any."""
    @property
    def model(self) -> str | None:
        """The chunk's first string ``model``."""
    @property
    def id(self) -> str | None:
        """The chunk's first string ``id`` (the upstream's own, before any rewrite)."""
    @property
    def text(self) -> str:
        """Text appended to choice 0's content by this chunk."""
    @property
    def malformed(self) -> str | None:
        """Why the stream is malformed (an event not JSON / not an object), if it is."""
    @property
    def error_event(self) -> str | None:
        """The data of an in-band error event (a JSON object with an ``error`` key), if any."""

@final
class ChatStreamScanner:
    """Checks an OpenAI-wire SSE stream, one network chunk per ``feed``.

    Each event's data must be a JSON object; nothing after ``[DONE]`` is relayed; a failure is
    reported in the scan and again by every later ``feed``. For a continuation, chunks without
    substance are dropped and every chunk's ``id`` becomes ``continuation_id`` (when given);
    ``prior_usage`` (prompt, completion tokens) is added to a usage chunk.
    """

    def __new__(
        cls,
        *,
        continuation: bool = False,
        continuation_id: str | None = None,
        prior_usage: tuple[int, int] | None = None,
        max_event_bytes: int = 16777216,
    ) -> ChatStreamScanner: ...
    def feed(self, chunk: bytes) -> ChunkScan:
        """Scan one chunk (GIL released for chunks >= 16 KiB); ``SseError`` on bad framing."""
    @property
    def done(self) -> bool:
        """``[DONE]`` was seen."""
    @property
    def pending(self) -> bool:
        """True when the stream so far ended mid-event."""
    @property
    def max_event_bytes(self) -> int:
        """The SSE size limit given at construction."""

# --- Token counting (rust/edgeproxy-py/src/tokens.rs; the typed API is edgeproxy.tokens) ---

class TokenizerError(EdgeProxyError):
    """Tokens could not be counted: unknown encoding, or a chat body that is not a chat request."""

@final
class TokenCount:
    """The prompt-token count of a chat request (immutable, comparable, hashable)."""

    @property
    def tokens(self) -> int:
        """The number of prompt tokens."""
    @property
    def exact(self) -> bool:
        """True when the count equals OpenAI's billing formula; False when it includes an
        approximation (tools, tool calls, content arrays, images) or is an estimate."""
    @property
    def encoding(self) -> str:
        """The encoding that counted (``cl100k_base``, ``o200k_base`` or ``estimate``)."""
    def __new__(cls, tokens: int, exact: bool, encoding: str) -> TokenCount: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def count_tokens(text: str, encoding: str = "cl100k_base") -> int:
    """Number of tokens in ``text`` (tiktoken's ``encode_ordinary``; GIL released >= 16 KiB)."""

def count_tokens_up_to(text: str, limit: int, encoding: str = "cl100k_base") -> int:
    """``min(count_tokens(text, encoding), limit + 1)``, stopping early past the limit."""

def count_chat_tokens(body: bytes, encoding: str) -> TokenCount:
    """Prompt tokens of a chat request body (JSON bytes), in one call (GIL released >= 16 KiB)."""

def preload_encoding(encoding: str) -> None:
    """Load an encoding's compiled-in rank data now instead of on first use."""

def token_table(encoding: str) -> list[bytes]:
    """The compiled-in token byte strings of an encoding, in rank order (for verification)."""

# ---- prompt-hash cache (rust/edgeproxy-core/src/cache.rs; docs/cache.md) ----

class CacheError(EdgeProxyError):
    """A request body could not be canonicalised for the prompt-hash cache (not valid JSON)."""

def cache_key(
    body: bytes, model: str, wire: str, tenant: str, *, utf8_checked: bool = False
) -> bytes:
    """The 16-byte XXH3-128 key of a request body, scoped by served model, wire and tenant.

    Hashes the canonical form (``canonical_request``) after the length-prefixed scope fields.
    Raises ``CacheError`` for a body that is not valid JSON (GIL released for bodies >= 16 KiB).
    ``utf8_checked=True`` skips the UTF-8 check when the caller has already decoded the same
    bytes (orjson validates UTF-8): same key; only pass it for bytes known to be UTF-8.
    """

def canonical_request(body: bytes) -> bytes:
    """The canonical JSON form of a request body: sorted keys, no whitespace, numbers by exact
    value (``1 == 1.0 == 1e0``), JCS string escapes, top-level ``stream``, ``stream_options``,
    ``user``, ``metadata``, ``store`` and ``service_tier`` dropped. Raises ``CacheError``."""

@final
class CacheStore:
    """Bounded in-memory store: LRU by entries and bytes, a TTL per entry, thread-safe.

    Each entry is charged ``len(value)`` plus a fixed overhead of 64 bytes. ``now`` is seconds
    on any monotonic clock (pass the proxy's clock so tests can use a fake one).
    """

    def __new__(cls, max_bytes: int, max_entries: int) -> CacheStore: ...
    def get(self, key: bytes, now: float) -> bytes | None:
        """The live value for ``key`` (now most recently used), or None if absent or expired."""
    def put(self, key: bytes, value: bytes, ttl: float, now: float) -> bool:
        """Store ``value`` for ``ttl`` seconds from ``now``, evicting LRU entries to make room.

        False when it can never fit (or ``ttl`` <= 0); the previous entry for ``key`` is dropped
        either way. ``key`` must be 16 bytes (``ValueError`` otherwise).
        """
    def remove(self, key: bytes) -> bool:
        """Drop the entry for ``key``; True when there was one."""
    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
    def stats(self) -> dict[str, int]:
        """Counters (hits, misses, stores, rejected, evictions, expirations) and sizes
        (entries, bytes_used, max_bytes, max_entries)."""
    def __len__(self) -> int: ...
    @property
    def bytes_used(self) -> int:
        """Bytes charged for the entries held."""
    @property
    def max_bytes(self) -> int: ...
    @property
    def max_entries(self) -> int: ...

# ---- stream translation (rust/edgeproxy-core/src/translate.rs; docs/anthropic.md) ----

class TranslationError(EdgeProxyError):
    """A request, response or stream cannot be translated between the OpenAI and Anthropic wires.

    ``param`` names the field (``"stream"`` for an upstream event that is not what its wire
    promises); ``message`` says why; ``str(exc)`` is ``"param: message"``.
    """

    param: str
    message: str

@final
class OpenAIToAnthropicStream:
    """An OpenAI ``chat.completion.chunk`` SSE stream in, Anthropic Messages SSE events out.

    Feed each upstream network chunk (any split gives the same events) and write what ``feed``
    returns. An upstream in-stream error is never translated: ``error`` is set, ``feed`` returns
    nothing more, and ``finish`` reports the stream incomplete. ``model`` replaces the upstream's
    model name in ``message_start``.
    """

    def __new__(
        cls, model: str | None = None, max_event_bytes: int = 16777216
    ) -> OpenAIToAnthropicStream: ...
    def feed(self, chunk: bytes) -> bytes:
        """Translate one chunk (GIL released >= 16 KiB); raises ``TranslationError``/``SseError``."""
    def finish(self) -> tuple[bytes, bool]:
        """End of the upstream body: (bytes still to write, whether the answer was complete)."""
    @property
    def complete(self) -> bool:
        """``message_stop`` has been produced (``[DONE]`` or a finish reason arrived)."""
    @property
    def started(self) -> bool:
        """Part of the answer (text or a tool call) has been produced."""
    @property
    def error(self) -> tuple[str, str] | None:
        """The upstream's in-stream error as (type, message), if it sent one."""
    @property
    def stop_reason(self) -> str | None:
        """The Anthropic stop reason, once the upstream finished."""
    @property
    def usage(self) -> tuple[int, int, int, int] | None:
        """(input, output, cached, cache_write) tokens from the upstream's usage chunk, if it
        sent one (``prompt_tokens_details.cached_tokens`` and ``cache_write_tokens``)."""

@final
class AnthropicToOpenAIStream:
    """An Anthropic Messages SSE stream in, OpenAI ``chat.completion.chunk`` SSE events out.

    ``data: [DONE]`` is written only after ``message_stop``. An ``error`` event (for example
    ``overloaded_error``) is never forwarded: ``error`` is set and ``finish`` reports the stream
    incomplete. ``include_usage`` mirrors the client's ``stream_options.include_usage``;
    ``created`` (Unix seconds, default now) and ``model`` stamp every chunk.
    """

    def __new__(
        cls,
        include_usage: bool = False,
        created: int | None = None,
        model: str | None = None,
        max_event_bytes: int = 16777216,
    ) -> AnthropicToOpenAIStream: ...
    def feed(self, chunk: bytes) -> bytes:
        """Translate one chunk (GIL released >= 16 KiB); raises ``TranslationError``/``SseError``."""
    def finish(self) -> tuple[bytes, bool]:
        """End of the upstream body: (bytes still to write, whether the answer was complete)."""
    @property
    def complete(self) -> bool:
        """``message_stop`` arrived with no error before it."""
    @property
    def started(self) -> bool:
        """Part of the answer (text or a tool call) has been produced."""
    @property
    def error(self) -> tuple[str, str] | None:
        """The upstream's in-stream error as (type, message), e.g. ("overloaded_error", ...)."""
    @property
    def finish_reason(self) -> str | None:
        """The OpenAI finish reason, once the upstream sent its stop reason."""
    @property
    def usage(self) -> tuple[int, int, int, int] | None:
        """(prompt, completion, cached, cache_write) tokens the upstream reported, if any:
        ``prompt`` includes Anthropic's cache reads and writes (OpenAI's way)."""

# ---- task classification (rust/edgeproxy-core/src/classify.rs; docs/tasks.md) ----

class TaskError(EdgeProxyError):
    """A task classifier model cannot be read or trained, or a task rule's pattern cannot be
    compiled; the message says why."""

@final
class TaskModel:
    """A trained task classifier: hashed character and word n-grams, multinomial logistic
    regression (immutable; safe to share between threads)."""

    @staticmethod
    def from_bytes(data: bytes) -> TaskModel:
        """Read a model file's bytes, checking magic, version, sizes, names, checksum and numbers;
        ``TaskError`` says what is wrong (GIL released for files >= 16 KiB)."""
    def to_bytes(self) -> bytes:
        """The model as a file (docs/tasks.md, "Model file format")."""
    @property
    def labels(self) -> list[str]:
        """The task names, in the order of ``probabilities``."""
    @property
    def digest(self) -> str:
        """The model file's XXH3-128 checksum, 32 hex digits: equal digests, equal models."""
    @property
    def bits(self) -> int:
        """Buckets are ``2 ** bits``."""
    @property
    def char_ngrams(self) -> tuple[int, int]:
        """Character n-gram lengths (shortest, longest); (0, 0) for none."""
    @property
    def word_ngrams(self) -> int:
        """The longest word n-gram (0: no word features)."""
    @property
    def max_bytes(self) -> int:
        """Longer texts are read as their first and last ``max_bytes / 2`` bytes."""
    def predict(self, text: str) -> tuple[str, float]:
        """The most probable task for ``text`` and its probability (GIL released >= 16 KiB)."""
    def probabilities(self, text: str) -> list[float]:
        """The probability of each task (``labels`` order) for ``text``; they sum to 1."""

def train_task_model(
    texts: list[str],
    labels: list[int],
    tasks: list[str],
    *,
    bits: int = 18,
    char_ngrams: tuple[int, int] = ...,  # (3, 5)
    word_ngrams: int = 2,
    max_bytes: int = 8192,
    epochs: int = 10,
    seed: int = 0,
    learning_rate: float = 0.5,
) -> TaskModel:
    """Train on ``texts`` labelled ``labels`` (indices into ``tasks``) by averaged SGD
    (``char_ngrams`` defaults to ``(3, 5)``); the same
    inputs and seed give the same model. The GIL is released while it trains. ``TaskError``
    for what it refuses (no examples, fewer than 2 tasks, bad names, bad settings)."""

@final
class TextPattern:
    """A task rule's compiled regex or keywords: finite automata, so matching is linear in the
    text whatever the pattern (immutable; safe to share between threads)."""

    @staticmethod
    def regex(pattern: str) -> TextPattern:
        """A regex in Rust ``regex`` syntax (no look-around, no backreferences), found anywhere
        in the text; ``TaskError`` says, in one line, why a pattern is refused."""
    @staticmethod
    def keywords(words: list[str]) -> TextPattern:
        """Any of ``words``, ignoring case; whole words where a keyword starts or ends with a
        word character (a letter, mark, decimal digit or ``_``). Regex syntax in a keyword is literal text."""
    def is_match(self, text: str) -> bool:
        """Whether the pattern occurs in ``text`` (GIL released >= 16 KiB)."""
