"""Steady streaming: streaming chat completions at a constant offered rate, with time to first
token (``SSE ttft``) and tokens per second (``SSE tokens_per_s``) recorded per stream."""

from loadtests.common import StreamUser


class SteadyStream(StreamUser):
    pass
