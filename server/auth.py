"""Who a request speaks for (REST and WebSocket alike) and whether its session was revoked."""

from __future__ import annotations

from collections.abc import Iterable

from yahaml_voice.core.config import Config
from yahaml_voice.core.protocol import WS_TOKEN_PREFIX
from yahaml_voice.core.tokens import AuthError, Identity, bearer, verify_token

from .store import Store

# The `jti` of an invite an admin minted (admin.py): `i-` and 20 hex digits.
INVITE_PREFIX = "i-"


def presented_token(
    authorization: str | None, query: str | None, subprotocols: Iterable[str] = ()
) -> str | None:
    """The token a request carries: a `yahaml-voice.token.<jwt>` WebSocket subprotocol (a
    browser cannot set headers on a WebSocket), else `Authorization: Bearer`, else
    `?token=` (as YAHAML allows)."""
    for name in subprotocols:
        if name.startswith(WS_TOKEN_PREFIX):
            return name[len(WS_TOKEN_PREFIX) :]
    return bearer(authorization) or query


async def authenticate(
    config: Config,
    store: Store,
    authorization: str | None,
    query: str | None,
    subprotocols: Iterable[str] = (),
) -> Identity:
    """The participant a request's token speaks for; AuthError (with its `code`) when the
    token is missing, invalid, expired or revoked."""
    identity = verify_token(config, presented_token(authorization, query, subprotocols))
    await ensure_not_revoked(store, identity)
    return identity


async def ensure_not_revoked(store: Store, identity: Identity) -> None:
    """AuthError `revoked` when the token's session was logged out or removed (any process)."""
    if await store.is_revoked(identity.session_id):
        if identity.session_id.startswith(INVITE_PREFIX):
            raise AuthError("an admin revoked this invite; ask for a new one", code="revoked")
        raise AuthError("token revoked: log in again", code="revoked")
