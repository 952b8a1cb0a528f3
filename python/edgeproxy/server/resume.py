"""Continue a committed stream that broke, on another candidate (``on_midstream_failure:
resume``).

The text the client already has goes to a candidate that can continue a trailing assistant
message (``assistant_prefill``), and its continuation is relayed into the same stream: the same
completion id, the usage of both legs added up. The resumed attempts share the request's
deadline, attempt cap and numbering (``AttemptKind.RESUME``).

A request with Anthropic's extended thinking is never resumed (the stream ends with the
in-band error instead): Anthropic takes no prefill with thinking on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from edgeproxy.resilience.attempts import PassThrough
from edgeproxy.server.relay import Leg
from edgeproxy.server.upstream_stream import StreamProgress
from edgeproxy.server.usage import UsageCounter
from edgeproxy.translate.thinking import carried_param

if TYPE_CHECKING:
    from edgeproxy.server.exchange import Exchange


class Resumer:
    """The relay's ``Resume`` for one exchange."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    async def __call__(self, text: str, original: StreamProgress, failed: str) -> Leg | None:
        """A leg continuing ``text`` (what the client has of the answer) after ``failed``
        broke; None when no candidate can (or may) take it."""
        exchange = self._exchange
        route = exchange.route
        if carried_param(exchange.attempter.body) is not None:
            # Extended thinking: Anthropic refuses a prefilled answer with thinking on, and a
            # continuation would think again after text the client already has.
            return None
        chain = tuple(c for c in exchange.chain if c.key != failed and c.assistant_prefill)
        attempts_left = route.max_attempts - exchange.ledger.attempts
        if not chain or attempts_left <= 0 or exchange.deadline.remaining() <= 0:
            return None
        first = next(c for c in exchange.chain if c.key == failed)
        counter = UsageCounter(exchange.prompt, first.tokenizer)
        # What the first leg consumed, added to the continuation's usage chunk for the client.
        prior = {"prompt_tokens": counter.prompt_now(), "completion_tokens": counter.text_now(text)}
        sent = exchange.attempter.body  # what went upstream (metadata.task taken out)
        body = {**sent, "messages": [*sent["messages"], {"role": "assistant", "content": text}]}
        options = replace(exchange.attempter.options, continues=original, prior_usage=prior)
        loop = exchange.loop(chain, attempts_left, resume=True)
        try:
            outcome = await loop.run(exchange.attempter.with_body(body, options))
        except PassThrough:
            return None
        if outcome.served is None:
            return None
        return exchange.leg(outcome)
