"""The secret store's key: rotate it (every value sealed again with a new key)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from conveyor.protocol import KeyRotated
from conveyor.server.auth import Admin
from conveyor.server.secretkey import rotate

router = APIRouter(prefix="/api/secrets", tags=["secrets"])


@router.post("/rotate-key")
def rotate_key(request: Request, _: Admin) -> KeyRotated:
    """A new key in the key file; every secret sealed again with it; the old key dropped."""
    return KeyRotated(resealed=rotate(request.app.state.sealer, request.app.state.sessions))
