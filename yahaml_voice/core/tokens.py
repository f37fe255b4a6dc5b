"""Credentials both processes use: participant and SFU-worker JWTs, TURN REST credentials, ICE config.

Tokens are HS256 JWTs (PyJWT) so that a host application sharing the secret can mint
them, and any server process of a deployment can check them without shared state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from .config import Config
from .protocol import IceConfigAnswer, IceServer, Role, is_role

ALGORITHM = "HS256"
WORKER_ROLE = "sfu"
ROLES: tuple[Role, ...] = ("ncs", "operator", "listener", "admin")
# Audience claims: a participant token never passes as a worker token, nor the reverse,
# even if an operator gave both secrets the same value.
PARTICIPANT_AUDIENCE = "yahaml-voice"
WORKER_AUDIENCE = "yahaml-voice-sfu"
# Lifetime of the token a worker mints for itself on each (re)connect.
WORKER_TOKEN_TTL = 3600.0


class AuthError(Exception):
    """Missing, malformed, forged, expired or revoked credentials (401)."""

    def __init__(self, message: str, code: str = "unauthorized") -> None:
        super().__init__(message)
        # The `error` of a 401 body or the `code` of a WebSocket error frame: `unauthorized`,
        # `token_expired` (from jwt.ExpiredSignatureError) or `revoked`.
        self.code = code


@dataclass(frozen=True)
class Identity:
    """Who a verified token speaks for."""

    participant_id: str
    callsign: str
    role: Role
    rooms: tuple[str, ...] | Literal["*"]
    expires_at: float
    # The token's `jti` (or a digest of the token when a host app left it out): what a
    # logout or a removal revokes.
    session_id: str

    def may_enter(self, room_id: str) -> bool:
        return self.rooms == "*" or room_id in self.rooms

    @property
    def can_publish(self) -> bool:
        return self.role != "listener"


def new_participant_id() -> str:
    return "p-" + uuid.uuid4().hex[:20]


def issue_token(
    config: Config,
    callsign: str,
    role: Role = "operator",
    rooms: list[str] | Literal["*"] = "*",
    ttl: float | None = None,
    participant_id: str | None = None,
    now: float | None = None,
    session_id: str | None = None,
) -> tuple[str, Identity]:
    """Sign a token for a (fresh unless given) participant id; `session_id` is its `jti`
    (an admin's invite id: what revoking the invite denies), fresh unless given."""
    if not is_role(role):  # from an untyped caller (the CLI)
        raise ValueError(f"unknown role {role!r}")
    now = time.time() if now is None else now
    ttl = config.auth.session_ttl if ttl is None else ttl
    pid = participant_id or new_participant_id()
    session_id = session_id or uuid.uuid4().hex
    exp = int(now + ttl)
    claims: dict[str, Any] = {
        "sub": pid,
        "name": callsign,
        "role": role,
        "rooms": rooms,
        "iat": int(now),
        "exp": exp,
        "jti": session_id,
        "iss": config.auth.issuer,
        "aud": PARTICIPANT_AUDIENCE,
    }
    token = jwt.encode(claims, config.token_secret(), algorithm=ALGORITHM)
    room_claim: tuple[str, ...] | Literal["*"] = "*" if rooms == "*" else tuple(rooms)
    return token, Identity(pid, callsign, role, room_claim, float(exp), session_id)


def _decode(token: str, secret: str, issuer: str, require: list[str]) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=issuer,
            # The audience is checked by the callers: participant tokens may lack it.
            options={"require": require, "verify_aud": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired", code="token_expired") from exc
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    return claims


def verify_token(config: Config, token: str | None) -> Identity:
    """Check a participant token's signature, expiry, audience and claim shapes.

    Tokens minted by a host application may leave out `aud` and `jti`; a token for any
    other audience (an SFU worker's) is refused."""
    if not token:
        raise AuthError("missing token")
    claims = _decode(
        token, config.token_secret(), config.auth.issuer, ["sub", "exp", "name", "role", "rooms"]
    )
    if claims.get("aud", PARTICIPANT_AUDIENCE) != PARTICIPANT_AUDIENCE:
        raise AuthError("invalid token: not a participant token")
    sub, name, role, rooms = claims["sub"], claims["name"], claims["role"], claims["rooms"]
    if not isinstance(sub, str) or not isinstance(name, str) or not sub or len(sub) > 64:
        raise AuthError("invalid token: bad sub or name")
    if not is_role(role):
        raise AuthError(f"invalid token: unknown role {role!r}")
    if rooms != "*" and not (isinstance(rooms, list) and all(isinstance(r, str) for r in rooms)):
        raise AuthError("invalid token: rooms must be a list or '*'")
    room_claim: tuple[str, ...] | Literal["*"] = "*" if rooms == "*" else tuple(rooms)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 128:
        # Without a usable jti the token itself is what a logout revokes.
        jti = "t-" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return Identity(sub, name, role, room_claim, float(claims["exp"]), jti)


def issue_worker_token(config: Config, ttl: float = WORKER_TOKEN_TTL) -> str:
    """A token for an SFU worker's `/sfu/ws`: signed with `sfu.secret`, its own audience."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": WORKER_ROLE,
        "role": WORKER_ROLE,
        "iat": now,
        "exp": int(now + ttl),
        "jti": uuid.uuid4().hex,
        "iss": config.auth.issuer,
        "aud": WORKER_AUDIENCE,
    }
    return jwt.encode(claims, config.worker_secret(), algorithm=ALGORITHM)


def verify_worker_token(config: Config, token: str | None) -> None:
    """Accept only a worker token: `sfu.secret`, audience and role of a worker."""
    if not token:
        raise AuthError("missing token")
    claims = _decode(token, config.worker_secret(), config.auth.issuer, ["exp", "aud", "role"])
    if claims["aud"] != WORKER_AUDIENCE or claims["role"] != WORKER_ROLE:
        raise AuthError("invalid token: not an SFU worker token")


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def turn_credentials(
    secret: str, user: str, ttl: float, now: float | None = None
) -> tuple[str, str]:
    """TURN REST API credentials (coturn `use-auth-secret`): expiry:user, base64(HMAC-SHA1)."""
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


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
