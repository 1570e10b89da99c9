"""Webhook receivers, one module per provider, over one shared push handler."""
