"""Policies: YAML written by SREs, validated into a frozen snapshot the proxy serves from."""

from edgeproxy.policy.load import load_policy, load_policy_text
from edgeproxy.policy.snapshot import Candidate, Policy, Route, Timeouts

__all__ = ["Candidate", "Policy", "Route", "Timeouts", "load_policy", "load_policy_text"]
