"""Credentials the server hands out or checks against its state: revocation, ICE config."""

from __future__ import annotations

from yahaml_voice.core.config import Config
from yahaml_voice.core.protocol import IceConfigAnswer, IceServer
from yahaml_voice.core.tokens import AuthError, Identity, turn_credentials

from .store import Store


async def ensure_not_revoked(store: Store, identity: Identity) -> None:
    """AuthError `revoked` when the token's session was logged out or removed (any process)."""
    if await store.is_revoked(identity.session_id):
        raise AuthError("token revoked: log in again", code="revoked")


def ice_config(config: Config, participant_id: str) -> IceConfigAnswer:
    """ICE servers for one participant, with fresh time-limited TURN credentials."""
    servers: list[IceServer] = []
    if config.ice.stun_urls:
        servers.append(IceServer(urls=list(config.ice.stun_urls)))
    turn = config.ice.turn
    if turn.urls and turn.secret:
        username, credential = turn_credentials(turn.secret, participant_id, turn.ttl)
        servers.append(IceServer(urls=list(turn.urls), username=username, credential=credential))
    return IceConfigAnswer(
        iceServers=servers,
        iceTransportPolicy="relay" if config.ice.force_relay else "all",
        ttl=int(turn.ttl) if turn.urls else None,
    )
