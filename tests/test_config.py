"""The one config loader: strict keys, env overrides, durations, and docs that keep up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from yahaml_voice.core.config import Config, ConfigError, load_config, parse_duration
from yahaml_voice.server.callsign import CallsignError, normalize_callsign

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_defaults_are_the_embedded_default() -> None:
    config = load_config(environ={})
    assert (config.server.host, config.server.port, config.auth.mode) == ("127.0.0.1", 8080, "open")
    assert [r.id for r in config.rooms] == ["shack", "echo"] and config.redis.url is None
    assert config.rooms[1].kind == "parrot" and config.rooms[1].always_sfu
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


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("limits:\n  frames_per_second: -1\n", "limits.frames_per_second must be >= 0"),
        ("limits:\n  frames_per_second: fast\n", "limits.frames_per_second: expected a number"),
        ("ice:\n  turn:\n    listening_port: true\n", "ice.turn.listening_port: expected an int"),
        ("ice:\n  turn:\n    prot: 1\n", "unknown configuration key ice.turn.prot"),
        ("ice:\n  turn: 3478\n", "ice.turn: expected a mapping"),
        ("server:\n  allowed_origins: [a, {}]\n", r"server.allowed_origins\[1\]: expected a str"),
        ("server:\n  grace_period: soon\n", "server.grace_period: not a duration: 'soon'"),
        ("sfu:\n  workers: many\n", "sfu.workers: expected an integer or 'auto'"),
        ("auth:\n  mode: tokn\n", "auth.mode: 'tokn' is not one of"),
        ("rooms:\n  - id: net\n    sfu_threshold: six\n", r"rooms\[0\].sfu_threshold: expected"),
        ("rooms:\n  - id: net\n    sfu_threshold: 4\n    mesh_threshold: 4\n",
         "rooms.net.mesh_threshold must be below sfu_threshold"),
        ("rooms:\n  - name: Net\n", r"rooms\[0\].id is required"),
    ],
)  # fmt: skip
def test_errors_name_the_nested_key_from_yaml(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LIMITS__FRAMES_PER_SECOND", "-1", "limits.frames_per_second must be >= 0"),
        ("LIMITS__MAX_TRACKED", "ten", "limits.max_tracked: expected an integer, got 'ten'"),
        ("ICE__TURN__TTL", "soon", "ice.turn.ttl: not a duration"),
        ("ICE__TURN__REALMS", "x", "unknown configuration key ice.turn.realms"),
        ("SERVER__TEST_HOOKS", "yes", "server.test_hooks: expected true or false, got 'yes'"),
        ("SERVER__PORT", "80.5", "server.port: expected an integer, got 80.5"),
    ],
)
def test_errors_name_the_nested_key_from_env(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(environ={"YAHAML_VOICE_" + name: value})


def test_env_values_as_today() -> None:
    """Env values are JSON when they parse (ints, bools, lists), else plain strings; a
    number given for a string key is its text; durations take units."""
    config = load_config(
        environ={
            "YAHAML_VOICE_SERVER__TEST_HOOKS": "true",
            "YAHAML_VOICE_SERVER__ALLOWED_HOSTS": '["a.example", "b.example"]',
            "YAHAML_VOICE_AUTH__SECRET": "12345678901234567890",
            "YAHAML_VOICE_AUTH__SESSION_TTL": "90m",
            "YAHAML_VOICE_LIMITS__JOINS_PER_SECOND": "3",
            "YAHAML_VOICE_SFU__WORKERS": "auto",
        }
    )
    assert config.server.test_hooks is True
    assert config.server.allowed_hosts == ["a.example", "b.example"]
    assert config.auth.secret == "12345678901234567890" and config.auth.session_ttl == 5400
    assert config.limits.joins_per_second == 3.0 and config.sfu.workers == "auto"


def test_sections_stay_mutable_and_checked() -> None:
    """The CLI overrides host/port/workers after loading; a wrong type is still refused."""
    config = load_config(environ={})
    config.server.port, config.sfu.workers = 9001, 2
    assert config.server.port == 9001 and config.worker_count() == 2
    with pytest.raises(ValueError):
        config.server.port = "ninety"  # type: ignore[assignment]


def test_redis_sentinels() -> None:
    env = {
        "YAHAML_VOICE_REDIS__SENTINELS": '["10.0.0.31:26379", "[fd00::2]:26379"]',
        "YAHAML_VOICE_REDIS__SERVICE_NAME": "club",
    }
    config = load_config(environ=env)
    assert config.redis.enabled and config.redis.url is None
    assert config.redis.sentinel_addresses() == [("10.0.0.31", 26379), ("fd00::2", 26379)]
    assert not load_config(environ={}).redis.enabled
    for bad, message in [
        ({"redis.sentinels": ["10.0.0.31"]}, r"redis\.sentinels: '10\.0\.0\.31' is not host:port"),
        ({"redis.sentinels": ["h:0"]}, r"redis\.sentinels"),
        ({"redis.sentinels": ["h:1"], "redis.service_name": ""}, r"redis\.service_name"),
        ({"redis.sentinel_password": "x"}, r"redis\.sentinel_password needs redis\.sentinels"),
        ({"redis.sentinels": ["h:1"], "redis.url": "unix:///r.sock"}, r"redis\.url"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(environ={}, overrides=bad)


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


def _keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in cls.model_fields.items():
        tp = field.annotation
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            out += _keys(tp, f"{prefix}{name}.")
        elif name != "rooms":
            out.append(prefix + name)
    return out


def test_every_key_is_documented() -> None:
    text = DOCS.read_text()
    documented = set(re.findall(r"`([a-z0-9_]+(?:\.[a-z0-9_]+)+)`", text))
    # Pairs share a row: `ice.turn.min_port` / `max_port`.
    for first, second in re.findall(r"`([a-z0-9_.]+)` / `([a-z0-9_]+)`", text):
        documented.add(f"{first.rsplit('.', 1)[0]}.{second}")
    missing = [key for key in _keys(Config) if key not in documented]
    assert missing == []
