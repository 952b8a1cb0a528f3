"""Resilience: the attempt loop, circuit breakers, the retry budget, backoff, hedging, load
shedding and health probes, each on a clock object (tested on a fake clock)."""
