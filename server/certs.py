"""How long the deployment's TLS certificates stay valid (`metrics.certificates`).

Why: a certificate that expires unnoticed takes TURN over TLS (and with the proxy's, the
whole site) down for everyone at once. The check runs in the background every
`metrics.certificate_interval`, never on a scrape: a scrape only reads the last results.

A target is a PEM file (an absolute path: its first certificate, the leaf) or a TLS
endpoint (`turns:host:port`, `https://host[:port]`, `wss://…`, `host:port`), whose served
certificate is read in a handshake that does not verify it: what counts is what the
listener actually hands out (a renewed file that coturn or nginx never reloaded still
shows as expiring), and no private key or root-only directory is needed for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from yahaml_voice.core.aio import cancel_and_wait
from yahaml_voice.core.config import Config, tls_endpoint

log = logging.getLogger(__name__)

# One handshake or file read may take this long before the target counts as unreadable.
CHECK_TIMEOUT = 10.0
# An unreadable target is tried again this soon (at most the interval): after a deploy,
# coturn may start after the server, and an hour of "unreadable" would be noise.
RETRY_UNREADABLE = 60.0


@dataclass(frozen=True)
class CertStatus:
    """The last check of one target: its notAfter (None: could not be read) and why not."""

    not_after: float | None
    error: str | None = None


def targets(config: Config) -> list[str]:
    """The configured targets; by default the `turns:` URLs handed to clients and the
    public URL when it is https (each endpoint once)."""
    if config.metrics.certificates is not None:
        return list(dict.fromkeys(config.metrics.certificates))
    found = [url for url in config.ice.turn.urls if url.startswith("turns:")]
    public = config.server.public_url
    if public and public.startswith("https://"):
        found.append(public)
    seen: dict[tuple[str, int], str] = {}
    for target in found:
        with contextlib.suppress(ValueError):  # a malformed URL is the ICE config's problem
            seen.setdefault(tls_endpoint(target), target)
    return list(seen.values())


def _not_after(der_or_pem: bytes, pem: bool) -> float:
    cert = (
        x509.load_pem_x509_certificate(der_or_pem)
        if pem
        else x509.load_der_x509_certificate(der_or_pem)
    )
    expires: datetime = cert.not_valid_after_utc
    return expires.timestamp()


async def _read_file(path: str) -> float:
    data = await asyncio.to_thread(Path(path).read_bytes)
    return _not_after(data, pem=True)


async def _read_endpoint(target: str) -> float:
    host, port = tls_endpoint(target)
    context = ssl.create_default_context()
    # Only the served certificate's dates are wanted: a self-signed one must still be read.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        if not der:
            raise ValueError("the endpoint sent no certificate")
        return _not_after(der, pem=False)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def check(target: str) -> CertStatus:
    """One target's notAfter now; never raises (an unreadable target has an error)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            if target.startswith("/"):
                return CertStatus(await _read_file(target))
            return CertStatus(await _read_endpoint(target))
    except (OSError, ValueError, TimeoutError, ssl.SSLError) as exc:
        return CertStatus(None, f"{type(exc).__name__}: {exc}"[:200])


class CertificateWatch:
    """Checks every target each interval; `status` holds the last result per target."""

    def __init__(self, config: Config) -> None:
        self.targets = targets(config)
        self.interval = config.metrics.certificate_interval
        self.status: dict[str, CertStatus] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.targets and self._task is None:
            self._task = asyncio.create_task(self._run(), name="certificate-watch")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def check_all(self) -> None:
        results = await asyncio.gather(*(check(target) for target in self.targets))
        for target, status in zip(self.targets, results, strict=True):
            before = self.status.get(target)
            self.status[target] = status
            if status.error and (before is None or before.error is None):
                log.warning("certificate of %s unreadable: %s", target, status.error)
            elif status.not_after is not None and status.not_after - time.time() < 14 * 86400:
                days = (status.not_after - time.time()) / 86400
                log.warning("certificate of %s expires in %.1f days", target, days)

    async def _run(self) -> None:
        while True:
            await self.check_all()
            failed = any(status.error for status in self.status.values())
            await asyncio.sleep(min(self.interval, RETRY_UNREADABLE) if failed else self.interval)
