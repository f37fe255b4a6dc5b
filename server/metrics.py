"""Prometheus metrics at /metrics (prometheus-client), read from the store on scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from quart import Blueprint, Response

from .context import services

metrics_blueprint = Blueprint("metrics", __name__)


@metrics_blueprint.get("/metrics")
async def metrics() -> Response:
    svc = services()
    # A registry per scrape: no module-level state, and values come straight from the store.
    registry = CollectorRegistry()
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
    sockets = Gauge("yahaml_voice_sockets", "WebSockets held by this process", registry=registry)
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
    limited = Counter(
        "yahaml_voice_limited",
        "Requests, sockets and seats refused or released by a per-client limit (this process)",
        ["limit"],
        registry=registry,
    )
    recording = Gauge(
        "yahaml_voice_room_recording",
        "1 while the room is being recorded (rooms with `record` only)",
        ["room"],
        registry=registry,
    )
    mixes = Counter(
        "yahaml_voice_mixdowns",
        "Mixdowns started by this process, and those that failed",
        ["result"],
        registry=registry,
    )
    mixer = svc.rooms.recordings.mixer
    mixes.labels("requested").inc(len(mixer.requested))
    mixes.labels("failed").inc(mixer.failed)
    for name, count in svc.limits.refused.items():
        limited.labels(name).inc(count)
    for room in svc.config.rooms:
        participants.labels(room.id).set(await svc.store.count(room.id))
        state = await svc.store.room_state(room.id)
        mode.labels(room.id).set(1 if state.mode == "sfu" else 0)
        spans.labels(room.id).set(len(state.workers))
        if room.record:
            doc = await svc.store.recording(room.id)
            recording.labels(room.id).set(1 if doc is not None and doc.state == "recording" else 0)
    sockets.set(len(svc.local_sockets))
    live = await svc.store.workers()
    workers.set(len(live))
    for worker in live:
        streams.labels(worker.id).set(float(worker.load.get("streams", 0)))
        native.labels(worker.id).set(1.0 if worker.load.get("fanout") == "native" else 0.0)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
