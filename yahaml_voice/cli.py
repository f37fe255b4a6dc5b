"""`yahaml-voice` command line: serve, token, sfu, turn, mix. The one module that wires server and SFU.

Each subcommand loads the same config (file from --config or YAHAML_VOICE_CONFIG, then
YAHAML_VOICE_* env) so a secret or a realm is never typed twice.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Literal

from . import __version__
from .core.config import Config, ConfigError, load_config, parse_duration


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def _cmd_serve(args: argparse.Namespace) -> int:
    from .core.aio import Service
    from .server.app import serve
    from .sfu.supervisor import Supervisor

    config = _load(args)
    if args.host:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    if args.workers is not None:
        config.sfu.workers = args.workers

    def companions(url: str) -> list[Service]:
        # The embedded default: SFU workers as children, registering at this server.
        return [Supervisor(config, server_url=url)] if config.worker_count() > 0 else []

    serve(config, companions)
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    from yahaml_voice.core.tokens import issue_token, issue_worker_token

    from .server.callsign import CallsignError, normalize_callsign

    config = _load(args)
    if args.sfu:
        if not config.sfu.secret:
            print("error: sfu.secret is not set; the token would not verify", file=sys.stderr)
            return 2
        print(issue_worker_token(config, ttl=parse_duration(args.ttl)))
        return 0
    if not args.callsign:
        print("error: --callsign is required", file=sys.stderr)
        return 2
    if not config.auth.secret:
        print("error: auth.secret is not set; tokens would not verify anywhere", file=sys.stderr)
        return 2
    try:
        callsign = normalize_callsign(args.callsign)
    except CallsignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rooms: list[str] | Literal["*"] = "*" if "*" in args.room or not args.room else list(args.room)
    for room_id in rooms if isinstance(rooms, list) else []:
        if config.room(room_id) is None:
            # Rooms an admin added at runtime live in the store, not in the file.
            print(
                f"warning: no room {room_id!r} in the configuration file "
                "(fine if an admin added it at runtime: docs/admin.md)",
                file=sys.stderr,
            )
    token, identity = issue_token(
        config,
        callsign,
        role=args.role,
        rooms=rooms,
        ttl=parse_duration(args.ttl),
        participant_id=args.id,
    )
    base = (config.server.public_url or f"http://{config.server.host}:{config.server.port}").rstrip(
        "/"
    )
    print(token)
    print(f"{base}/#token={token}")
    print(
        f"# {identity.callsign} ({identity.role}) id={identity.participant_id} "
        f"rooms={','.join(rooms) if isinstance(rooms, list) else '*'}",
        file=sys.stderr,
    )
    return 0


def _cmd_sfu(args: argparse.Namespace) -> int:
    import os

    from .sfu.worker import TOKEN_ENV
    from .sfu.worker import main as worker_main

    config = _load(args)
    if not config.sfu.secret and not os.environ.get(TOKEN_ENV):
        print(
            f"error: sfu.secret is not set (nor {TOKEN_ENV}); the server would refuse this worker",
            file=sys.stderr,
        )
        return 2
    return worker_main(config, server_url=args.server, worker_id=args.id)


def _cmd_turn(args: argparse.Namespace) -> int:
    from .server.turn import main as turn_main

    return turn_main(_load(args), output=args.output, run=args.run)


def _cmd_mix(args: argparse.Namespace) -> int:
    # Decodes and encodes (PyAV): a process of its own, spawned by the server when a
    # recording stops; never in a forwarding worker.
    from .sfu.mixdown import main as mix_main

    return mix_main(args.directory)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yahaml-voice", description=__doc__)
    parser.add_argument("--config", help="YAML config file (default: $YAHAML_VOICE_CONFIG)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the signaling server (and child SFU workers)")
    serve.add_argument("--config", default=argparse.SUPPRESS)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="child SFU workers (0: none)")
    serve.set_defaults(func=_cmd_serve)

    token = sub.add_parser("token", help="mint an invite token (token auth mode)")
    token.add_argument("--config", default=argparse.SUPPRESS)
    token.add_argument("--callsign", help="the participant's callsign (required unless --sfu)")
    token.add_argument("--room", action="append", default=[], help="room id (repeat; * = all)")
    token.add_argument(
        "--role", choices=["ncs", "operator", "listener", "admin"], default="operator"
    )
    token.add_argument("--ttl", default="12h", help="lifetime, e.g. 90m, 12h, 7d")
    token.add_argument("--id", help="participant id (default: a fresh one)")
    token.add_argument(
        "--sfu",
        action="store_true",
        help="mint an SFU worker token (sfu.secret) for YAHAML_VOICE_SFU_TOKEN instead",
    )
    token.set_defaults(func=_cmd_token)

    sfu = sub.add_parser("sfu", help="run one SFU worker process")
    sfu.add_argument("--config", default=argparse.SUPPRESS)
    sfu.add_argument("--server", help="server URL to register with (default: sfu.server_url)")
    sfu.add_argument("--id", help="worker id (default: host-pid)")
    sfu.set_defaults(func=_cmd_sfu)

    turn = sub.add_parser("turn", help="render coturn's turnserver.conf from this config")
    turn.add_argument("--config", default=argparse.SUPPRESS)
    turn.add_argument("--output", "-o", help="write here instead of stdout")
    turn.add_argument("--run", action="store_true", help="render and run turnserver in foreground")
    turn.set_defaults(func=_cmd_turn)

    mix = sub.add_parser("mix", help="mix a recording's slot tracks into its mixed.opus")
    mix.add_argument("directory", help="the recording's directory (<recording.dir>/<room>/<id>)")
    mix.set_defaults(func=_cmd_mix)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
