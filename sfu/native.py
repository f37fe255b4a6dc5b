"""The native fan-out (fanout.c): one C call per forwarded packet and group of subscribers.

Python's cost per subscriber (copy, `srtp_protect` through cffi, `socket.send`) is most of
what the forwarder spends; the C loop does the same work without re-entering the
interpreter per subscriber. The C file is built with cffi (API mode) on first use into a
per-user cache, so the wheel stays pure Python and an install never needs a compiler;
without one (or without Python's headers, or with `sfu.native: false`) `load()` returns
None and the forwarder keeps its Python loop, which sends the same bytes.

A `NativeSink` owns a dup of its subscriber's socket: if aioice closes the socket while
the sink is still in a batch, the number cannot be reused by another socket under us.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import socket
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from .aiortc_private import FastSink, srtp_context_address, srtp_protect_address

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fanout.c")
CDEF = """
struct yv_sink { void *srtp; int fd; int addrlen; uint8_t addr[28]; };
void yv_init(uintptr_t protect);
int yv_fanout(const char *packet, int size, const struct yv_sink *sinks, int count,
              uint8_t *scratch, int *errors);
"""
SCRATCH = 64 * 1664  # YV_RUN * YV_SLOT in fanout.c
CACHE_ENV = "XDG_CACHE_HOME"


def cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache")
    return Path(base) / "yahaml-voice"


def _module_name(source: str) -> str:
    import cffi

    tag = f"{source}\0{CDEF}\0{cffi.__version__}\0{sysconfig.get_config_var('SOABI')}"
    return "_yv_fanout_" + hashlib.sha256(tag.encode()).hexdigest()[:16]


def _build(name: str, source: str, target: Path) -> Path:
    """Compile the extension into a scratch directory, then move it into `target`."""
    import cffi

    builder = cffi.FFI()
    builder.cdef(CDEF)
    builder.set_source(name, source, extra_compile_args=["-O2"])
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="yv-fanout-", dir=target) as tmp:
        built = Path(builder.compile(tmpdir=tmp, verbose=False))
        final = target / built.name
        os.replace(built, final)  # atomic: concurrent workers may build at the same time
    return final


def _import(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


_loaded: dict[str, Fanout | None] = {}


def load(enabled: bool = True) -> Fanout | None:
    """The native fan-out, or None (disabled, or it cannot be built here: logged why)."""
    if not enabled:
        return None
    if "fanout" in _loaded:
        return _loaded["fanout"]
    fanout: Fanout | None = None
    try:
        source = SOURCE.read_text()
        name = _module_name(source)
        target = cache_dir()
        found = sorted(target.glob(f"{name}.*.so")) + sorted(target.glob(f"{name}.so"))
        path = found[0] if found else _build(name, source, target)
        fanout = Fanout(_import(name, path))
    except Exception as exc:  # no compiler, no headers, read-only home, ...
        logger.warning(
            "native fan-out unavailable (%s: %s): Python fan-out", type(exc).__name__, exc
        )
    _loaded["fanout"] = fanout
    return fanout


def _sockaddr(addr: Any) -> bytes:
    """struct sockaddr_in / sockaddr_in6 (Linux layout) of a (host, port, ...) tuple."""
    host, port = addr[0], int(addr[1])
    try:
        raw = socket.inet_pton(socket.AF_INET, host)
        return socket.AF_INET.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big") + raw + bytes(8)
    except OSError:
        raw = socket.inet_pton(socket.AF_INET6, host)
        scope = int(addr[3]) if len(addr) > 3 else 0
        return (
            socket.AF_INET6.to_bytes(2, sys.byteorder)
            + port.to_bytes(2, "big")
            + bytes(4)
            + raw
            + scope.to_bytes(4, sys.byteorder)
        )


class NativeSink:
    """One subscriber for the C loop: its SRTP session, a dup of its socket, its address."""

    __slots__ = ("addr", "fd", "owner", "srtp")

    def __init__(self, sink: FastSink) -> None:
        context, _send, addr, owner, sock = sink
        self.owner = owner  # keeps the libsrtp session alive as long as this sink
        self.srtp = srtp_context_address(context)
        self.addr = b"" if addr == 0 else _sockaddr(addr)
        self.fd = os.dup(sock.fileno())

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class Batch:
    """The sinks of one group as the C array the loop walks (rebuilt on change, not hot)."""

    __slots__ = ("array", "count", "ffi", "sinks")

    def __init__(self, ffi: Any) -> None:
        self.ffi = ffi
        self.sinks: list[NativeSink] = []
        self.array: Any = ffi.NULL
        self.count = 0

    def add(self, sink: NativeSink) -> None:
        self.sinks.append(sink)
        self._rebuild()

    def remove(self, sink: NativeSink) -> None:
        self.sinks = [s for s in self.sinks if s is not sink]
        self._rebuild()

    def _rebuild(self) -> None:
        ffi = self.ffi
        # Sinks on one socket next to each other: the C loop sends such a run at once.
        ordered = sorted(self.sinks, key=lambda s: s.fd)
        array = ffi.new("struct yv_sink[]", max(1, len(ordered)))
        for entry, sink in zip(array, ordered, strict=False):
            entry.srtp = ffi.cast("void *", sink.srtp)
            entry.fd = sink.fd
            entry.addrlen = len(sink.addr)
            if sink.addr:
                ffi.memmove(entry.addr, sink.addr, len(sink.addr))
        self.array, self.count = array, len(ordered)


class Fanout:
    """The loaded extension: batches for groups and the one call per packet and group."""

    def __init__(self, module: Any) -> None:
        self.ffi = module.ffi
        self.lib = module.lib
        self.lib.yv_init(srtp_protect_address())
        self.scratch = self.ffi.new("uint8_t[]", SCRATCH)
        self.errors = self.ffi.new("int *")
        self.send = self.lib.yv_fanout

    def batch(self) -> Batch:
        return Batch(self.ffi)
