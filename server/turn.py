"""`yahaml-voice turn`: coturn's turnserver.conf rendered from the server's own config.

The TURN secret and realm live once, in `ice.turn`; the server mints credentials with
them and this renders coturn's side, so the two can never disagree. The template
(coturn/turnserver.conf.j2) is shared with the Ansible role, hence plain Jinja2 and a
single `turn` variable holding TurnConfig's fields.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jinja2

from yahaml_voice.core.config import Config, ConfigError
from yahaml_voice.core.processes import kill_process, stop_process
from yahaml_voice.core.resources import package_path

log = logging.getLogger(__name__)

TEMPLATE = package_path("coturn", "turnserver.conf.j2")
TURNSERVER = "turnserver"


def turn_vars(config: Config) -> dict[str, Any]:
    """The template's `turn` mapping: exactly TurnConfig's fields, plain types."""
    return config.ice.turn.model_dump()


def render(config: Config, template: Path = TEMPLATE) -> str:
    """turnserver.conf text; ConfigError when a value coturn needs is missing or unsafe."""
    turn = config.ice.turn
    if not turn.secret:
        raise ConfigError(
            "ice.turn.secret is not set: coturn and the server must share it "
            "(set ice.turn.secret and ice.turn.urls, see docs/turn.md)"
        )
    if bool(turn.cert) != bool(turn.pkey):
        raise ConfigError("ice.turn.cert and ice.turn.pkey must be set together")
    if not 0 < turn.min_port <= turn.max_port <= 65535:
        raise ConfigError("ice.turn.min_port..max_port is not a port range")
    for name, value in (("secret", turn.secret), ("realm", turn.realm)):
        if "\n" in value or "\r" in value:
            raise ConfigError(f"ice.turn.{name} must be one line")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template.parent)),
        # Ansible's template module defaults, so both renderers produce the same file.
        trim_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    return env.get_template(template.name).render(turn=turn_vars(config))


def turnserver_command(conf: Path, workdir: Path, binary: str = TURNSERVER) -> list[str]:
    """argv running coturn in the foreground with its pid file and db kept in `workdir`.

    Debian's defaults (/var/run, /var/lib/turn) are shared by every instance on a host
    and unwritable for a developer; a private workdir keeps dev and test runs apart.
    """
    return [
        binary,
        "-c",
        str(conf),
        "--pidfile",
        str(workdir / "turnserver.pid"),
        "--userdb",
        str(workdir / "turndb"),
    ]


def write_conf(text: str, path: Path) -> Path:
    """Write the rendered file, new files readable by their owner only: it holds the secret."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _run(text: str) -> int:
    """Run turnserver in the foreground on a temp copy; the copy is removed afterwards."""
    binary = shutil.which(TURNSERVER) or ("/usr/bin/" + TURNSERVER)
    if not os.access(binary, os.X_OK):
        print("error: turnserver not found (install Debian's coturn package)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="yahaml-turn-"))
    try:
        conf = write_conf(text, workdir / "turnserver.conf")
        proc = subprocess.Popen(turnserver_command(conf, workdir, binary))
        previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            return proc.wait()
        except KeyboardInterrupt:
            code = stop_process(proc)
            return 1 if code is None else code
        finally:
            signal.signal(signal.SIGTERM, previous)
            kill_process(proc)  # nothing to do unless an error came in between
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(config: Config, output: str | None = None, run: bool = False) -> int:
    """Render to stdout or `output`; with `run`, start coturn on it in the foreground."""
    try:
        text = render(config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if output:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_conf(text, out)
        print(f"wrote {out}", file=sys.stderr)
    elif not run:
        sys.stdout.write(text)
    if run:
        if not config.ice.turn.urls:
            print(
                "warning: ice.turn.urls is empty, so the server hands out no TURN server",
                file=sys.stderr,
            )
        return _run(text)
    return 0
