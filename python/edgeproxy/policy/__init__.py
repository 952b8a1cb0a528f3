"""Policies: YAML written by SREs, validated into the frozen snapshot (``edgeproxy.snapshot``)
the proxy serves from."""

from edgeproxy.policy.load import load_policy, load_policy_text

__all__ = ["load_policy", "load_policy_text"]
