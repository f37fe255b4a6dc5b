"""The one config loader: strict keys, env overrides, durations, and docs that keep up."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from yahaml_voice.core.config import Config, ConfigError, load_config, parse_duration
from yahaml_voice.server.callsign import CallsignError, normalize_callsign

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_defaults_are_the_embedded_default() -> None:
    config = load_config(environ={})
    assert (config.server.host, config.server.port, config.auth.mode) == ("127.0.0.1", 8080, "open")
    assert [r.id for r in config.rooms] == ["shack"] and config.redis.url is None
    assert config.ice.stun_urls == [] and config.ice.turn.urls == []


def test_file_env_and_strictness(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "server:\n  port: 9000\n  grace_period: 2m\nrooms:\n  - id: net\n    sfu_threshold: 6\n"
    )
    config = load_config(
        path, environ={"YAHAML_VOICE_SERVER__PORT": "9100", "YAHAML_VOICE_SFU__WORKERS": "0"}
    )
    assert config.server.port == 9100 and config.server.grace_period == 120
    assert config.sfu.workers == 0
    assert config.rooms[0].mesh_threshold == 3 and config.rooms[0].name == "Net"
    path.write_text("server:\n  prot: 9000\n")
    with pytest.raises(ConfigError, match=r"server\.prot"):
        load_config(path, environ={})
    path.write_text("server:\n  port: lots\n")
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="secret is required"):
        load_config(environ={"YAHAML_VOICE_AUTH__MODE": "token"})
    with pytest.raises(ConfigError, match="duplicate"):
        load_config(environ={}, overrides={"rooms": [{"id": "a"}, {"id": "a"}]})
    with pytest.raises(ConfigError, match=r"turn\.secret"):
        load_config(environ={}, overrides={"ice.turn.urls": ["turn:x:3478"]})


def test_durations() -> None:
    assert parse_duration("250ms") == 0.25 and parse_duration("12h") == 43200
    assert parse_duration(30) == 30.0
    with pytest.raises(ConfigError):
        parse_duration("soon")


@pytest.mark.parametrize(
    "call",
    [
        "W1AW",
        "g4abc/p",
        "VE3/W1AW",
        "K1ABC/QRP",
        "DL1ABC/M",
        "9A1AA",
        "3DA0RS",
        "2E0ABC",
        "HB9/DL1ABC/P",
    ],
)
def test_good_callsigns(call: str) -> None:
    assert normalize_callsign(call) == call.upper()


@pytest.mark.parametrize(
    "call", ["", "HELLO", "1234", "W1", "W1-AW", "W1AW/TOOLONGX", "<script>", "A" * 30]
)
def test_bad_callsigns(call: str) -> None:
    with pytest.raises(CallsignError):
        normalize_callsign(call)


def _keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        if dataclasses.is_dataclass(tp):
            out += _keys(tp, f"{prefix}{field.name}.")
        elif field.name != "rooms":
            out.append(prefix + field.name)
    return out


def test_every_key_is_documented() -> None:
    text = DOCS.read_text()
    documented = set(re.findall(r"`([a-z0-9_]+(?:\.[a-z0-9_]+)+)`", text))
    # Pairs share a row: `ice.turn.min_port` / `max_port`.
    for first, second in re.findall(r"`([a-z0-9_.]+)` / `([a-z0-9_]+)`", text):
        documented.add(f"{first.rsplit('.', 1)[0]}.{second}")
    missing = [key for key in _keys(Config) if key not in documented]
    assert missing == []
