"""Steady chat: non-stream chat completions at a constant offered rate (users x USER_RATE/s)."""

from loadtests.common import ChatUser


class SteadyChat(ChatUser):
    pass
