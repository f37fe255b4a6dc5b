"""deploy/monitoring/: the alert rules and the dashboard are valid and name real metrics.

`promtool` (Debian's `prometheus` package) checks the rules, the scrape example and the
dashboard's queries, and runs the rules' own unit tests (alerts.test.yml); a real server
with a real SFU worker child is scraped to list the metric families it exports, so a
renamed metric fails here instead of silencing an alert. The certificate check reads a
PEM file and a real TLS listener.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.redis_fixture import RedisServer, write_tls_files
from tests.servers import ServerProcess, free_port
from yahaml_voice.core.config import load_config
from yahaml_voice.server.certs import check, targets

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing (Debian package prometheus)"
)
# Series Prometheus makes itself, not the server.
SCRAPE_SERIES = {"up"}
METRIC = re.compile(r"\b((?:yahaml_voice|process)_[a-z0-9_]+|up)\b(?!\s*\()")


def _rules() -> list[dict[str, str]]:
    doc = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_queries() -> list[str]:
    doc = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in doc["panels"] for target in panel.get("targets", [])]


def _promtool(*args: str | Path) -> str:
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=30, cwd=MONITORING
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_promtool
def test_promtool_checks_the_rules_the_scrape_example_and_the_rule_tests() -> None:
    assert "SUCCESS" in _promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml")
    # The alerts fire on the series they are meant for (and the quiet ones stay quiet).
    assert "SUCCESS" in _promtool("test", "rules", "alerts.test.yml")
    wanted = {
        "worker down": "YahamlVoiceSfuWorkerDown",
        "placement failing": "YahamlVoiceRoomPlacementFailing",
        "TURN quota": "YahamlVoiceTurnQuotaNear",
        "certificate": "YahamlVoiceCertificateExpiring",
        "Redis": "YahamlVoiceRedisUnreachable",
        "RSS": "YahamlVoiceSfuWorkerMemoryHigh",
    }
    names = {rule["alert"] for rule in _rules()}
    assert set(wanted.values()) <= names, set(wanted.values()) - names


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # promtool checks PromQL only in rule files: each query as a recording rule.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for i, expr in enumerate(_dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in _promtool("check", "rules", path)


def _exported(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every family and sample name in an exposition, with its samples by labels."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        found.setdefault(family.name, {})
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@pytest.fixture
def cert_file(tmp_path: Path) -> Path:
    """A PEM certificate valid for one more day (tests/redis_fixture.py's)."""
    _, cert, _ = write_tls_files(tmp_path)
    return cert


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_rules_and_dashboard_name_metrics_the_server_exports(
    server_factory: Callable[..., ServerProcess], cert_file: Path, redis_server: RedisServer
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    server = server_factory(
        {
            "metrics": {"certificates": [str(cert_file), closed], "certificate_interval": "1h"},
            "redis": {"url": redis_server.url},
        },
        workers=1,
    )
    server.wait_healthy(workers=1)
    deadline = time.monotonic() + 15
    while True:
        exported = _exported(server.metrics())
        rss = exported.get("yahaml_voice_sfu_worker_resident_memory_bytes", {})
        if len(exported.get("yahaml_voice_tls_cert_readable", {})) == 2 and rss:
            break
        assert time.monotonic() < deadline, f"no certificate or worker samples: {exported}"
        time.sleep(0.2)

    used = {name for rule in _rules() for name in METRIC.findall(rule["expr"])}
    used |= {name for expr in _dashboard_queries() for name in METRIC.findall(expr)}
    assert {"yahaml_voice_store_up", "process_resident_memory_bytes"} <= used
    missing = sorted(used - SCRAPE_SERIES - set(exported))
    assert not missing, f"named by deploy/monitoring/ but not exported: {missing}"

    # The values behind the alerts are right, not just present.
    assert exported["yahaml_voice_store_up"][()] == 1
    assert exported["yahaml_voice_sfu_workers"][()] == 1
    assert all(value > 10e6 for value in rss.values()), rss  # a real process's RSS
    readable = exported["yahaml_voice_tls_cert_readable"]
    assert readable[(("target", str(cert_file)),)] == 1
    assert readable[(("target", closed),)] == 0
    expiry = exported["yahaml_voice_tls_cert_expiry_seconds"]
    assert 86400 - 120 < expiry[(("target", str(cert_file)),)] <= 86400
    assert (("target", closed),) not in expiry
    assert exported["yahaml_voice_placements_total"][(("result", "no_worker"),)] == 0

    # Redis down: the scrape still answers (200, not 503) and says so.
    redis_server.stop()
    exported = _exported(server.metrics())
    assert exported["yahaml_voice_store_up"][()] == 0
    assert exported["process_resident_memory_bytes"][()] > 0


async def test_the_certificate_check_reads_files_and_tls_listeners(tmp_path: Path) -> None:
    _, cert, key = write_tls_files(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listener = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    try:
        served, stored = await asyncio.gather(check(f"turns:127.0.0.1:{port}"), check(str(cert)))
    finally:
        listener.close()
        await listener.wait_closed()
    assert served.error is None and stored.error is None
    assert served.not_after == stored.not_after
    assert served.not_after is not None and 0 < served.not_after - time.time() <= 86400

    missing = await check(str(tmp_path / "missing.pem"))
    assert missing.not_after is None and missing.error and "FileNotFoundError" in missing.error
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    assert (await check(str(garbage))).not_after is None


def test_certificate_targets_default_to_the_turns_urls_and_the_public_url() -> None:
    config = load_config(
        environ={},
        overrides={
            "server.public_url": "https://voice.example.org",
            "ice.turn.secret": "s" * 32,
            "ice.turn.urls": [
                "turn:turn.example.org:3478?transport=udp",
                "turns:turn.example.org:5349?transport=tcp",
                "turns:turn.example.org:443?transport=tcp",
            ],
        },
    )
    assert targets(config) == [
        "turns:turn.example.org:5349?transport=tcp",
        "turns:turn.example.org:443?transport=tcp",
        "https://voice.example.org",
    ]
    explicit = load_config(environ={}, overrides={"metrics.certificates": ["/etc/x.pem"]})
    assert targets(explicit) == ["/etc/x.pem"]
    with pytest.raises(ValueError, match="neither an absolute path"):
        load_config(environ={}, overrides={"metrics.certificates": ["relative.pem"]})


def test_worker_memory_comes_from_its_own_report_on_any_host() -> None:
    """A worker on another host (the multi-host layout) is measured by itself: its `load`
    carries `rss`; the server reads the OS only for same-host workers of older versions."""
    from yahaml_voice.core.protocol import WorkerLoad
    from yahaml_voice.server.metrics import _rss
    from yahaml_voice.server.store import WorkerRecord

    load = WorkerLoad(rooms=1, peers=2, streams=2, cpu=0.1, rss=123_456_789).model_dump()
    remote = WorkerRecord("sfu2-1", 3, 0.0, load=load, info={"host": "sfu2", "pid": 4242})
    assert _rss(remote) == 123_456_789
    silent = WorkerRecord("sfu2-2", 3, 0.0, load={"rooms": 0}, info={"host": "sfu2", "pid": 1})
    assert _rss(silent) is None
