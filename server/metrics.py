"""Prometheus metrics at /metrics (prometheus-client), read from the store on scrape.

deploy/monitoring/ holds the alert rules and the dashboard built on these names; a test
(tests/test_monitoring.py) fails when they name a metric this module no longer exports.
"""

from __future__ import annotations

import socket
import time

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from quart import Blueprint, Response

from .context import Services, services
from .store import StoreError, WorkerRecord

metrics_blueprint = Blueprint("metrics", __name__)


@metrics_blueprint.get("/metrics")
async def metrics() -> Response:
    svc = services()
    # A registry per scrape: no module-level state, and values come straight from the store.
    registry = CollectorRegistry()
    # process_resident_memory_bytes, process_cpu_seconds_total, open fds of this process.
    ProcessCollector(registry=registry)
    _local_metrics(svc, registry)
    up = Gauge(
        "yahaml_voice_store_up",
        "1 when the state store (Redis) answered this scrape, 0 when it did not",
        registry=registry,
    )
    try:
        await _store_metrics(svc, registry)
        up.set(1)
    except StoreError:
        # Still an answer (not a 503): the scrape itself says that the store is down.
        up.set(0)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _local_metrics(svc: Services, registry: CollectorRegistry) -> None:
    """What this process knows without asking the store."""
    sockets = Gauge("yahaml_voice_sockets", "WebSockets held by this process", registry=registry)
    sockets.set(len(svc.local_sockets))
    limited = Counter(
        "yahaml_voice_limited",
        "Requests, sockets and seats refused or released by a per-client limit (this process)",
        ["limit"],
        registry=registry,
    )
    for name, count in svc.limits.refused.items():
        limited.labels(name).inc(count)
    mixes = Counter(
        "yahaml_voice_mixdowns",
        "Mixdowns started by this process, and those that failed",
        ["result"],
        registry=registry,
    )
    mixer = svc.rooms.recordings.mixer
    mixes.labels("requested").inc(len(mixer.requested))
    mixes.labels("failed").inc(mixer.failed)
    placements = Counter(
        "yahaml_voice_placements",
        "Rooms this process put on an SFU worker (placed) or could not (no_worker live)",
        ["result"],
        registry=registry,
    )
    for result in ("placed", "no_worker"):
        placements.labels(result).inc(svc.rooms.modes.placements[result])
    expiry = Gauge(
        "yahaml_voice_tls_cert_expiry_seconds",
        "Seconds until the certificate expires (negative: expired), at its last check",
        ["target"],
        registry=registry,
    )
    readable = Gauge(
        "yahaml_voice_tls_cert_readable",
        "1 when the certificate (metrics.certificates) could be read at its last check",
        ["target"],
        registry=registry,
    )
    now = time.time()
    for target, status in (svc.certificates.status if svc.certificates else {}).items():
        readable.labels(target).set(0 if status.not_after is None else 1)
        if status.not_after is not None:
            expiry.labels(target).set(status.not_after - now)
    quota = Gauge(
        "yahaml_voice_turn_total_quota",
        "coturn's total_quota (allocations at most; 0 without TURN)",
        registry=registry,
    )
    turn = svc.config.ice.turn
    quota.set(turn.total_quota if _turn_urls(svc) else 0)


def _turn_urls(svc: Services) -> int:
    return sum(1 for url in svc.config.ice.turn.urls if url.startswith(("turn:", "turns:")))


def _rss(worker: WorkerRecord) -> float | None:
    """A worker's resident memory: as it reports it in `load` (any host), else read from
    the OS when it runs on this host (its hello names host and pid)."""
    reported = worker.load.get("rss")
    if isinstance(reported, int) and reported > 0:
        return float(reported)
    pid = worker.info.get("pid")
    if worker.info.get("host") != socket.gethostname() or not isinstance(pid, int):
        return None
    try:
        return float(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


async def _store_metrics(svc: Services, registry: CollectorRegistry) -> None:
    """Rooms and workers, from the store (StoreError when it is unreachable)."""
    participants = Gauge(
        "yahaml_voice_participants", "Participants per room", ["room"], registry=registry
    )
    mode = Gauge(
        "yahaml_voice_room_sfu", "1 when the room runs on an SFU", ["room"], registry=registry
    )
    spans = Gauge(
        "yahaml_voice_room_sfu_workers",
        "SFU workers a room runs on (origin and edges; 0 in mesh mode)",
        ["room"],
        registry=registry,
    )
    waiting = Gauge(
        "yahaml_voice_room_waiting_for_worker",
        "1 when the room is due on an SFU worker (threshold reached) but runs in mesh mode",
        ["room"],
        registry=registry,
    )
    allocations = Gauge(
        "yahaml_voice_turn_allocations_max",
        "TURN allocations the participants' peer connections may hold at most "
        "(one per TURN URL and peer connection; compare yahaml_voice_turn_total_quota)",
        registry=registry,
    )
    workers = Gauge("yahaml_voice_sfu_workers", "Live SFU workers", registry=registry)
    streams = Gauge(
        "yahaml_voice_sfu_streams", "Forwarded streams per worker", ["worker"], registry=registry
    )
    native = Gauge(
        "yahaml_voice_sfu_native",
        "1 when the worker fans out with its native helper, 0 with the Python loop",
        ["worker"],
        registry=registry,
    )
    rss = Gauge(
        "yahaml_voice_sfu_worker_resident_memory_bytes",
        "Resident memory of each SFU worker (as it reports it)",
        ["worker"],
        registry=registry,
    )
    recording = Gauge(
        "yahaml_voice_room_recording",
        "1 while the room is being recorded (rooms with `record` only)",
        ["room"],
        registry=registry,
    )
    urls = _turn_urls(svc)
    connections = 0
    for room in list(svc.config.rooms):  # the admin page may replace the list meanwhile
        count = await svc.store.count(room.id)
        participants.labels(room.id).set(count)
        state = await svc.store.room_state(room.id)
        mode.labels(room.id).set(1 if state.mode == "sfu" else 0)
        spans.labels(room.id).set(len(state.workers))
        due = count >= (1 if room.always_sfu else room.sfu_threshold)
        waiting.labels(room.id).set(1 if state.mode == "mesh" and due else 0)
        # Mesh: a connection to every other member; SFU: one each.
        connections += count * (count - 1) if state.mode == "mesh" else count
        if room.record:
            doc = await svc.store.recording(room.id)
            recording.labels(room.id).set(1 if doc is not None and doc.state == "recording" else 0)
    allocations.set(connections * urls)
    live = await svc.store.workers()
    workers.set(len(live))
    draining = Gauge(
        "yahaml_voice_sfu_workers_draining",
        "Live SFU workers that drain (SIGTERM: their rooms move away, then they exit)",
        registry=registry,
    )
    draining.set(sum(1 for w in live if w.draining))
    drains = Gauge(
        "yahaml_voice_sfu_worker_draining",
        "1 while the worker drains, 0 otherwise",
        ["worker"],
        registry=registry,
    )
    for worker in live:
        drains.labels(worker.id).set(1.0 if worker.draining else 0.0)
        streams.labels(worker.id).set(float(worker.load.get("streams", 0)))
        native.labels(worker.id).set(1.0 if worker.load.get("fanout") == "native" else 0.0)
        resident = _rss(worker)
        if resident is not None:
            rss.labels(worker.id).set(resident)
