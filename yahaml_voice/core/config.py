"""The one configuration loader: a YAML file plus YAHAML_VOICE_* environment overrides.

Parsed strictly by pydantic models: an unknown key is an error that names it, so a typo
in a sysadmin's file never silently falls back to a default, and no value is coerced
beyond what a YAML file or an environment variable naturally gives (numbers for string
keys, duration strings such as "90m" for durations). The embedded default needs no file.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import typing
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

ENV_PREFIX = "YAHAML_VOICE_"
CONFIG_ENV = "YAHAML_VOICE_CONFIG"
# An SFU worker's control token (sfu/worker.py): prefixed, but not a configuration key.
SFU_TOKEN_ENV = "YAHAML_VOICE_SFU_TOKEN"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it."""


class _BadValue(ValueError):
    """A field validator's complaint; the loader puts the key's path in front of it."""


def parse_duration(value: str | int | float) -> float:
    """Seconds from `90`, `"90s"`, `"15m"`, `"12h"`, `"2d"` or `"250ms"`."""
    if isinstance(value, bool):
        raise ConfigError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ConfigError(f"not a duration: {value!r} (use e.g. 30s, 15m, 12h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _duration(value: Any) -> float:
    if not isinstance(value, str | int | float):
        raise _BadValue(f"not a duration: {value!r}")
    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise _BadValue(str(exc)) from exc


def _text(value: Any) -> Any:
    """A number where a string belongs (YAML `secret: 1234...`, a JSON-parsed env value)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _workers(value: Any) -> Any:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _BadValue(f"expected an integer or 'auto', got {value!r}")


# Seconds; in a file or the environment also "90s", "15m", "12h", "2d" or "250ms".
Duration = Annotated[float, BeforeValidator(_duration)]
# A string; a number given for it is taken as its text.
Text = Annotated[str, BeforeValidator(_text)]
Workers = Annotated[int | Literal["auto"], BeforeValidator(_workers)]


def _ip(value: Any) -> Any:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _BadValue(f"expected an IP address, got {value!r}") from None


# An IP address (not a host name).
IpText = Annotated[str, BeforeValidator(_ip)]


class _Section(BaseModel):
    """Strict: unknown keys refused, no coercion; assignments (the CLI's) validated too."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class RoomConfig(_Section):
    id: Text
    name: Text = ""
    description: Text = ""
    max_participants: int = 50
    # At this many participants the room moves onto an SFU worker.
    sfu_threshold: int = 8
    # At or below this many it may return to mesh (hysteresis); default threshold // 2.
    mesh_threshold: int | None = None
    # Push-to-talk by default for this room's clients.
    ptt: bool = False
    # Net control (docs/protocol.md "Net control"). `open`: anyone with a microphone talks.
    # `directed`: always on an SFU worker; members talk only while they hold the floor.
    floor: Literal["open", "directed"] = "open"
    # Floor holders at once besides net control (who can always talk).
    max_talkers: int = 1
    # A `priority` request takes the floor at once; the holder is paused and resumes after.
    priority_break_in: bool = False
    # Time-out timer: a holder transmitting longer than this without a break is cut off by
    # the SFU and locked out until silent for `tot_reset`. 0: no timer.
    tot: Duration = 180.0
    tot_reset: Duration = 2.0
    # A short tone every listener hears when a holder unkeys (None: on in directed rooms).
    courtesy_tone: bool | None = None
    courtesy_tone_hz: int = 1000
    courtesy_tone_ms: int = 150
    # How long a participant removed by net control stays out of this room (its token, its
    # callsign). 0: until the net ends (the room empties).
    ban_time: Duration = 0.0
    # Recording (docs/protocol.md "Recording"): `true` records whenever the room is on its
    # SFU worker, `ncs` when net control starts it. A recorded room is always on a worker
    # (placed at its first join, like a directed one) and says so before anyone joins.
    record: bool | Literal["ncs"] = False
    # `parrot`: an echo test. What a member says is played back to it alone when it stops
    # talking (at most recording.parrot_max); nobody hears anyone else. Always on a worker.
    kind: Literal["voice", "parrot"] = "voice"

    @property
    def directed(self) -> bool:
        return self.floor == "directed"

    @property
    def always_sfu(self) -> bool:
        """Placed on a worker at its first join and never back to mesh."""
        return self.directed or self.record is not False or self.kind == "parrot"

    @property
    def courtesy(self) -> bool:
        return self.directed if self.courtesy_tone is None else self.courtesy_tone

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        """The name from the id and mesh_threshold from sfu_threshold, when left out."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        room_id = data.get("id")
        if not data.get("name") and isinstance(room_id, str):
            data["name"] = room_id.replace("-", " ").title()
        sfu = data.get("sfu_threshold", cls.model_fields["sfu_threshold"].default)
        if data.get("mesh_threshold") is None and isinstance(sfu, int):
            data["mesh_threshold"] = max(1, sfu // 2)
        return data

    @model_validator(mode="after")
    def _check(self) -> RoomConfig:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", self.id):
            raise ConfigError(
                f"rooms: bad room id {self.id!r} (lowercase letters, digits, - and _)"
            )
        if self.max_participants < 1:
            raise ConfigError(f"rooms.{self.id}.max_participants must be >= 1")
        if self.sfu_threshold < 2:
            raise ConfigError(f"rooms.{self.id}.sfu_threshold must be >= 2")
        if self.mesh_threshold is not None and self.mesh_threshold >= self.sfu_threshold:
            raise ConfigError(f"rooms.{self.id}.mesh_threshold must be below sfu_threshold")
        if not 1 <= self.max_talkers <= 8:
            raise ConfigError(f"rooms.{self.id}.max_talkers must be between 1 and 8")
        if self.tot < 0 or self.tot_reset < 0 or self.ban_time < 0:
            raise ConfigError(f"rooms.{self.id}: tot, tot_reset and ban_time must be >= 0")
        if not 200 <= self.courtesy_tone_hz <= 4000:
            raise ConfigError(f"rooms.{self.id}.courtesy_tone_hz must be between 200 and 4000")
        if not 20 <= self.courtesy_tone_ms <= 1000:
            raise ConfigError(f"rooms.{self.id}.courtesy_tone_ms must be between 20 and 1000")
        return self


def _default_rooms() -> list[RoomConfig]:
    return [
        RoomConfig(
            id="shack",
            name="Shack",
            description="Intercom for the operators in the shack",
            max_participants=100,
        ),
        RoomConfig(
            id="echo",
            name="Echo test",
            description="Test your audio: what you say comes back to you alone",
            max_participants=50,
            kind="parrot",
        ),
    ]


class ServerConfig(_Section):
    host: Text = "127.0.0.1"
    port: int = 8080
    # Base URL that invite links point at, e.g. https://voice.example.org
    public_url: Text | None = None
    # Origins allowed to open the WebSocket and call the API from a browser. Empty: same
    # origin only. "*" allows any (not recommended).
    allowed_origins: list[Text] = Field(default_factory=list)
    # Seconds a participant keeps its seat after its last socket closed.
    grace_period: Duration = 15.0
    # Largest request body accepted (bytes); SDPs are further limited to 64 KiB.
    max_body_bytes: int = 128 * 1024
    # Directory of the browser client; empty = the client/ beside the package.
    client_dir: Text | None = None
    log_level: Text = "info"
    # Log one JSON object per line (for journald / log shippers) instead of text.
    log_json: bool = False
    # Test-only routes (e.g. drop a participant's sockets). Never enable in production.
    test_hooks: bool = False
    # Host names this server answers to besides those it always does (the bind host,
    # localhost, 127.0.0.1, ::1, the host of public_url, and this machine's addresses when
    # bound to 0.0.0.0 or ::); any other Host header gets 421, which defeats DNS
    # rebinding. "*" turns the check off (not recommended).
    allowed_hosts: list[Text] = Field(default_factory=list)
    # WebSockets this process holds at most (participants and workers); above it new ones
    # are refused with 503 before the upgrade.
    max_sockets: int = 4096
    # A client that takes none of what we send for this long is disconnected (TCP abort).
    write_timeout: Duration = 10.0
    # Roster changes (participantJoined/Left) of a room with at least this many members
    # are coalesced: the first of a quiet room goes at once, those within
    # roster_batch_window after it together at its end, one frame per member
    # (delivery.py), so a join storm is not quadratic in frames. 0: never coalesce.
    roster_batch_above: int = 32
    roster_batch_window: Duration = 0.1
    # Reverse proxies (addresses or CIDRs) whose X-Forwarded-For names the client; from any
    # other peer the header is ignored and the peer's own address is the client's.
    trusted_proxies: list[Text] = Field(default_factory=list)


class AuthConfig(_Section):
    mode: Literal["open", "token"] = "open"
    # HS256 secret. Open mode generates one per start when empty; token mode requires it
    # (and every server process of a deployment must share it).
    secret: Text | None = None
    # Lifetime of tokens issued by POST /api/sessions.
    session_ttl: Duration = 12 * 3600.0
    issuer: Text = "yahaml-voice"


class TurnConfig(_Section):
    # e.g. ["turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp",
    #       "turns:turn.example.org:5349?transport=tcp"]
    urls: list[Text] = Field(default_factory=list)
    # coturn's static-auth-secret (use-auth-secret / TURN REST credentials).
    secret: Text | None = None
    # Lifetime of issued TURN credentials; clients renew them while in a room.
    ttl: Duration = 600.0
    realm: Text = "yahaml-voice"
    # Settings used to render coturn's turnserver.conf (`yahaml-voice turn`).
    listen_ip: Text = "127.0.0.1"
    listening_port: int = 3478
    tls_listening_port: int = 5349
    # Also listen for TURN/TLS on 443 (networks that only let HTTPS out).
    alt_tls_443: bool = False
    external_ip: Text | None = None
    relay_ip: Text | None = None
    min_port: int = 49160
    max_port: int = 49999
    cert: Text | None = None
    pkey: Text | None = None
    # Allocations per participant (coturn counts the id after "expiry:"): a full mesh of
    # sfu_threshold - 1 peers x 3 TURN URLs, plus the SFU link during a switch.
    user_quota: int = 24
    total_quota: int = 1200
    # Loopback peers allowed: only for test labs on one machine.
    allow_loopback_peers: bool = False
    # Extra allowed-peer-ip entries (e.g. the relay's own address, a lab segment).
    allowed_peer_ips: list[Text] = Field(default_factory=list)
    log_file: Text = "stdout"


class IceConfig(_Section):
    # STUN URLs handed to clients. None by default: this is self-hosted, no third party.
    stun_urls: list[Text] = Field(default_factory=list)
    turn: TurnConfig = Field(default_factory=TurnConfig)
    # Clients use relay candidates only (hides operators' addresses; needs TURN).
    force_relay: bool = False


class SfuConfig(_Section):
    # Worker processes the server spawns as children: "auto" = one per core, 0 = none
    # (workers run elsewhere with `yahaml-voice sfu`).
    workers: Workers = "auto"
    # Speaker slots per subscriber: the loudest N speakers are forwarded.
    slots: int = 3
    # Hold a speaker in its slot at least this long after it fell silent.
    slot_hold: Duration = 1.5
    # A worker that sent no heartbeat for this long is dead.
    heartbeat_timeout: Duration = 2.5
    # SIGTERM drains a worker: its rooms move to other workers while it still forwards,
    # and it exits once it holds none, or after this long at the latest (a second SIGTERM:
    # at once). The systemd unit's TimeoutStopSec must be above it.
    drain_timeout: Duration = Field(default=20.0, ge=0, le=3600)
    # Server URL a worker connects to (ws://host:port); default: this server.
    server_url: Text | None = None
    # Interfaces/addresses the worker's ICE gathers on (empty: all of aioice's choice).
    ice_addresses: list[Text] = Field(default_factory=list)
    # Use the configured TURN servers from the worker too.
    use_turn: bool = True
    # Fan packets out with the native helper (sfu/fanout.c, compiled with cffi on a
    # worker's first start into ~/.cache/yahaml-voice); false, or no C compiler and
    # Python headers there: the Python loop, same bytes, more CPU.
    native: bool = True
    # A room with more participants on its SFU worker than this spans workers: publishers
    # stay on its origin worker, which sends each slot's packets once to every edge worker,
    # and further listeners go to an edge (0: a room never spans).
    max_listeners_per_worker: int = Field(default=400, ge=0)
    # The address this worker's edge rooms take the origin's slot streams on. Loopback
    # (the default, workers on one host) gets plain RTP; any other address SRTP with a key
    # sent over the control connections. Set it to the host's address when workers run
    # on several hosts.
    cascade_host: IpText = "127.0.0.1"
    # HS256 secret of the workers' own tokens (never auth.secret). The embedded workers get
    # one generated per start; workers run elsewhere (`yahaml-voice sfu`) need it set, the
    # same on every server process and worker.
    secret: Text | None = None


class RedisConfig(_Section):
    # redis://[:password@]host:port/db or rediss:// for TLS. Empty: in-memory (one process).
    # With `sentinels`, only its password, db and TLS options are used (the sentinels name
    # the host), e.g. redis://:password@/0.
    url: Text | None = None
    # Prefix of every key and channel (several deployments on one Redis).
    prefix: Text = "yv:"
    # Redis Sentinel: "host:port" of each sentinel. Set: every process asks them for the
    # master of `service_name` and follows a failover without a restart.
    sentinels: list[Text] = Field(default_factory=list)
    service_name: Text = "yahaml-voice"
    # The sentinels' own password (their `requirepass`), if any.
    sentinel_password: Text | None = None

    @property
    def enabled(self) -> bool:
        """Redis mode: a URL or sentinels are set."""
        return bool(self.url or self.sentinels)

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port); an IPv6 address may be bracketed."""
        return [_host_port(entry) for entry in self.sentinels]


def _host_port(entry: str) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"redis.sentinels: {entry!r} is not host:port")
    return host, int(port)


class RecordingConfig(_Section):
    """Recordings of rooms with `record` set: Ogg Opus files written by the SFU worker from
    the packets it forwards (never transcoded), under `dir/<room>/<recording id>/`. The
    server serves them from the same directory: with workers on other hosts, `dir` must be
    shared storage (relative paths are from the working directory)."""

    dir: Text = "data/recordings"
    # Recordings older than this are deleted (0: kept until max_bytes).
    keep: Duration = 30 * 86400.0
    # Bytes all recordings may take; the oldest go first (0: no cap).
    max_bytes: int = Field(default=10 * 2**30, ge=0)
    # Packets a worker's recording writer may hold in memory: a disk slower than this
    # loses recording (the recording fails, with an event), never forwarding.
    queue: int = Field(default=4096, ge=16)
    # Transmissions a member of a recorded room can list and replay ("say again").
    replay_last: int = Field(default=20, ge=1, le=1000)
    # The longest transmission a parrot room plays back.
    parrot_max: Duration = 30.0


class NetLogConfig(_Section):
    """The net log (nets, check-ins, their logs). Redis mode keeps it in Redis, shared by
    every process; the embedded default in this SQLite file, so open nets survive a
    restart (relative paths are from the working directory)."""

    path: Text = "data/netlog.sqlite3"
    # Closed nets kept per room (the oldest are deleted first).
    keep: int = Field(default=500, ge=1)
    # Check-ins per net, and lines per net log (grants and transmissions past this are
    # dropped from the log; net control is told once).
    max_checkins: int = Field(default=1000, ge=1)
    max_events: int = Field(default=20000, ge=1)


class MetricsConfig(_Section):
    # Expose Prometheus metrics at /metrics.
    enabled: bool = True
    # Bearer token that opens /metrics and /docs (Authorization: Bearer <token>).
    token: Text | None = None
    # A second listener, for scrapers only, where /metrics and /docs need no token (never
    # proxied: the proxy forwards to server.port). None: no such listener.
    port: int | None = None
    host: Text = "127.0.0.1"
    # TLS certificates whose expiry is exported (yahaml_voice_tls_cert_expiry_seconds): PEM
    # files (absolute paths) or TLS endpoints (turns:host:port, https://host, host:port)
    # whose served certificate is read. None: the turns: URLs of ice.turn.urls and
    # server.public_url when https. [] checks none.
    certificates: list[Text] | None = None
    # How often they are read.
    certificate_interval: Duration = Field(default=3600.0, gt=0)

    @field_validator("certificates")
    @classmethod
    def _targets(cls, value: list[str] | None) -> list[str] | None:
        for target in value or []:
            if not target.startswith("/"):
                tls_endpoint(target)  # ValueError names the target
        return value


# Ports of TLS endpoint targets (metrics.certificates) that name none.
_TLS_PORTS = {"https": 443, "wss": 443, "turns": 5349}


def tls_endpoint(target: str) -> tuple[str, int]:
    """(host, port) of a TLS endpoint (`turns:host:port?…`, `https://host[:port]/…`,
    `wss://…`, `host:port`); ValueError when it names none."""
    url = target
    if url.startswith("turns:"):
        url = "turns://" + url[len("turns:") :].split("?", 1)[0]
    elif "://" not in url:
        url = "tls://" + url
    try:
        parts = urlsplit(url)
        port = parts.port or _TLS_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    if port is None or not parts.hostname:
        raise ValueError(f"{target!r} is neither an absolute path nor a TLS host:port")
    return parts.hostname, port


class LimitsConfig(_Section):
    """Per-client limits (server/limits.py); 0 switches a limit off."""

    # POST /api/sessions per source address per minute (open mode).
    sessions_per_minute: int = 30
    # Open WebSockets per participant, counted across server processes.
    sockets_per_participant: int = 8
    # Joins per participant: sustained rate per second and burst (token bucket).
    joins_per_second: float = 2.0
    join_burst: int = 10
    # Signals (offer/answer/candidate) per participant: rate per second and burst.
    signals_per_second: float = 20.0
    signal_burst: int = 200
    # Seats held (in all rooms) by participants who joined from one source address.
    participants_per_address: int = 64
    # A participant in company who sent no offer/answer for this long loses its seat.
    media_timeout: Duration = 30.0
    # Addresses and participants the in-process counters remember at most (LRU).
    max_tracked: int = 10000
    # Frames one participant socket may send: sustained rate and burst (clients send a
    # ping every few seconds and a subscribe or two); beyond: error frame and close 4429.
    frames_per_second: float = 10.0
    frame_burst: int = 40


class Config(_Section):
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    ice: IceConfig = Field(default_factory=IceConfig)
    sfu: SfuConfig = Field(default_factory=SfuConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    netlog: NetLogConfig = Field(default_factory=NetLogConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    rooms: list[RoomConfig] = Field(default_factory=_default_rooms)

    @model_validator(mode="after")
    def _check(self) -> Config:
        """Rules across keys and sections (each names the keys it is about)."""
        ids = [room.id for room in self.rooms]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            raise ConfigError(f"rooms: duplicate id {sorted(duplicates)[0]!r}")
        if self.auth.mode == "token" and not self.auth.secret:
            raise ConfigError("auth.secret is required in token mode")
        if self.auth.secret is not None and len(self.auth.secret) < 16:
            raise ConfigError("auth.secret must be at least 16 characters")
        if self.ice.turn.urls and not self.ice.turn.secret:
            raise ConfigError("ice.turn.secret is required when ice.turn.urls is set")
        if self.ice.force_relay and not self.ice.turn.urls:
            raise ConfigError("ice.force_relay needs ice.turn.urls")
        if self.server.max_sockets < 1:
            raise ConfigError("server.max_sockets must be >= 1")
        if self.metrics.token is not None and len(self.metrics.token) < 16:
            raise ConfigError("metrics.token must be at least 16 characters")
        if self.metrics.port is not None and self.metrics.port == self.server.port:
            raise ConfigError("metrics.port must differ from server.port")
        if self.sfu.slots < 1 or self.sfu.slots > 16:
            raise ConfigError("sfu.slots must be between 1 and 16")
        if self.sfu.secret is not None and len(self.sfu.secret) < 16:
            raise ConfigError("sfu.secret must be at least 16 characters")
        if self.sfu.secret is not None and self.sfu.secret == self.auth.secret:
            raise ConfigError("sfu.secret must differ from auth.secret")
        self._check_limits()
        self._check_redis()
        return self

    def _check_redis(self) -> None:
        redis = self.redis
        redis.sentinel_addresses()
        if redis.sentinels and not redis.service_name:
            raise ConfigError("redis.service_name must not be empty when redis.sentinels is set")
        if redis.sentinel_password is not None and not redis.sentinels:
            raise ConfigError("redis.sentinel_password needs redis.sentinels")
        if redis.sentinels and redis.url and not redis.url.startswith(("redis://", "rediss://")):
            raise ConfigError("redis.url: with redis.sentinels use redis:// or rediss://")

    def _check_limits(self) -> None:
        for entry in self.server.trusted_proxies:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ConfigError(
                    f"server.trusted_proxies: {entry!r} is not an address or CIDR"
                ) from exc
        limits = self.limits
        for name in (
            "sessions_per_minute",
            "sockets_per_participant",
            "join_burst",
            "signal_burst",
            "participants_per_address",
            "frame_burst",
            "joins_per_second",
            "signals_per_second",
            "media_timeout",
            "frames_per_second",
        ):
            if getattr(limits, name) < 0:
                raise ConfigError(f"limits.{name} must be >= 0 (0 switches it off)")
        if limits.max_tracked < 100:
            raise ConfigError("limits.max_tracked must be at least 100")

    def room(self, room_id: str) -> RoomConfig | None:
        for room in self.rooms:
            if room.id == room_id:
                return room
        return None

    def token_secret(self) -> str:
        """The HS256 secret; open mode without one gets a random secret once per process."""
        if not self.auth.secret:
            self.auth.secret = secrets.token_urlsafe(32)
        return self.auth.secret

    def worker_secret(self) -> str:
        """The SFU workers' HS256 secret; without one, a random secret once per process
        (enough for the embedded workers, which the supervisor hands it to)."""
        if not self.sfu.secret:
            self.sfu.secret = secrets.token_urlsafe(32)
        return self.sfu.secret

    def worker_count(self) -> int:
        if self.sfu.workers == "auto":
            return max(1, os.cpu_count() or 1)
        return int(self.sfu.workers)


_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "model_type": "a mapping",
    "dict_type": "a mapping",
}


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _message(error: ErrorDetails) -> str:
    """One pydantic error as the loader words it: the dotted key first."""
    path = _path(error["loc"])
    kind = error["type"]
    value = error.get("input")
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return str(cause)  # a rule across keys: its message names them
    if isinstance(cause, ValueError):
        return f"{path}: {cause}"
    if kind == "extra_forbidden":
        return f"unknown configuration key {path}"
    if kind == "missing":
        return f"{path} is required"
    if kind in _EXPECTED:
        return f"{path}: expected {_EXPECTED[kind]}, got {value!r}"
    if kind == "literal_error":
        return f"{path}: {value!r} is not one of {(error.get('ctx') or {}).get('expected')}"
    return f"{path or 'config'}: {error['msg']} (got {value!r})"


def _validate(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_message(exc.errors()[0])) from exc


def _env_overrides(data: dict[str, Any], environ: typing.Mapping[str, str]) -> None:
    """Apply YAHAML_VOICE_SECTION__KEY=value (value parsed as JSON, else a plain string)."""
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in (CONFIG_ENV, SFU_TOKEN_ENV):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {part} is not a section")
            node = child
        node[parts[-1]] = value


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: typing.Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Read the file (if any), apply env overrides, then `overrides`, and validate."""
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded
    _env_overrides(data, environ)
    for dotted, value in (overrides or {}).items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _validate(data)
