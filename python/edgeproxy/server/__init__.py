"""The aiohttp server: the handler every ingress wire shares, the exchange in typed steps (plan,
attempts, ledger, relay), the ingress wire plug-ins (``server.ingress``), admin and health
endpoints."""
