"""The per-app bundle of services that handlers reach through `services()`.

Kept on `app.extensions` instead of module globals so several apps (tests, several
server processes in one interpreter) never share state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from quart import current_app

from yahaml_voice.core.config import Config

from .admin import AdminService
from .certs import CertificateWatch
from .limits import Limits
from .rooms import RoomService
from .store import Bus, Store, WorkerRecord

if TYPE_CHECKING:
    from .connections import Connection

EXTENSION = "yahaml_voice"


@dataclass
class Services:
    config: Config
    store: Store
    bus: Bus
    rooms: RoomService
    # Rooms at runtime, invites, the live overview (role admin).
    admin: AdminService
    # Identifies this server process in the store (presence of its sockets).
    node_id: str
    # The WebSockets this process holds (participants' and workers'), by connection id.
    local_sockets: dict[str, Connection] = field(default_factory=dict)
    # The expiry of the deployment's TLS certificates (metrics.certificates), for /metrics.
    certificates: CertificateWatch | None = None
    # Set when the process begins to stop (SIGTERM: a restart, an upgrade): it takes no new
    # sockets (ws.py).
    stopping: bool = False
    # Set once its own embedded workers (which die with it) are stopped: a worker socket
    # closed from then on is closed by the stop, the worker lives on and keeps its rooms.
    keep_worker_rooms: bool = False
    # The workers registered through this process's sockets, by connection id.
    local_workers: dict[str, WorkerRecord] = field(default_factory=dict)

    @property
    def limits(self) -> Limits:
        """Per-client limits and their refusal counts (held by the room service)."""
        return self.rooms.limits

    def close_sockets(self, code: int, reason: str) -> None:
        for conn in list(self.local_sockets.values()):
            conn.close(code, reason)


def services() -> Services:
    found = current_app.extensions[EXTENSION]
    assert isinstance(found, Services)
    return found
