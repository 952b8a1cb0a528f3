"""Failure classification and the attempt loop (breakers, budgets and probes join later)."""
