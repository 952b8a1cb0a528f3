"""The aiohttp server: ingress, admin and health endpoints."""
