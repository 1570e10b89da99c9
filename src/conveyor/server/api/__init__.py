"""The HTTP API under /api: every route declares the role it needs."""
