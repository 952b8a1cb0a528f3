"""Decides, request by request, whether the current fault applies (rate and count)."""

from __future__ import annotations

import dataclasses
import random

from .faults import Fault

_NONE = Fault()


class FaultGate:
    """Holds the current fault and draws from a seeded RNG so a run is reproducible.

    The RNG is re-seeded on every ``set`` so that the same fault on the same sim always hits the
    same request indices, whatever happened before.
    """

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self._fault = _NONE

    @property
    def fault(self) -> Fault:
        """The current fault; its ``count`` is the number of hits left."""
        return self._fault

    def set(self, fault: Fault) -> None:
        self._fault = fault
        self._rng = random.Random(self._seed)

    def draw(self) -> Fault | None:
        """Return the fault to apply to this request, or None for a normal answer."""
        fault = self._fault
        # refuse acts on the listening socket, not on individual requests.
        if fault.mode in ("none", "refuse"):
            return None
        if fault.rate < 1.0 and self._rng.random() >= fault.rate:
            return None
        if fault.count is not None:
            left = fault.count - 1
            self._fault = dataclasses.replace(fault, count=left) if left > 0 else _NONE
        return fault
