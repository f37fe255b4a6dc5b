"""Checks of credentials against the server's state (revocation)."""

from __future__ import annotations

from yahaml_voice.core.tokens import AuthError, Identity

from .store import Store


async def ensure_not_revoked(store: Store, identity: Identity) -> None:
    """AuthError `revoked` when the token's session was logged out or removed (any process)."""
    if await store.is_revoked(identity.session_id):
        raise AuthError("token revoked: log in again", code="revoked")
