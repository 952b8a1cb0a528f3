"""Upstream adapters: how one attempt is sent to a provider, over pooled connections."""
