"""Logs now; traces, metrics and cost accounting join later."""
