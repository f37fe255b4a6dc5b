"""The deploy's examples parse and render as documented, without converging anything.

Every commented knob of deploy/group_vars/all/main.yml (and of the example inventories)
is YAML a sysadmin can uncomment; every ```yaml block of docs/deploy.md parses; the
multi-host example renders the TURN settings a host-level override merges into (the
TURN host keeps the site's alt_tls_443, the signaling host hands out turns:...:443).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KEY_LINE = re.compile(r"^# ([a-z][a-z0-9_]*):(\s|$)")


def commented_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, uncommented YAML) of each `# key: value` line and its `#   ` continuation."""
    blocks: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if KEY_LINE.match(line):
            blocks.append((number, [line[2:]]))
        elif blocks and line.startswith("#   ") and blocks[-1][0] + len(blocks[-1][1]) == number:
            blocks[-1][1].append(line[2:])
    return [(number, "\n".join(lines)) for number, lines in blocks]


def example_files() -> list[Path]:
    return sorted(
        [
            DEPLOY / "group_vars" / "all" / "main.yml",
            *(DEPLOY / "inventories").rglob("*.yml"),
            *(DEPLOY / "roles").glob("*/defaults/main.yml"),
        ]
    )


@pytest.mark.parametrize("path", example_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_example_files_and_their_commented_knobs_are_yaml(path: Path) -> None:
    """The file parses, and so does each commented `# key: value` block in it."""
    text = path.read_text()
    yaml.safe_load(text)
    bad = []
    # Role defaults explain knobs in prose comments; the documented copies are the examples.
    blocks = [] if path.parent.name == "defaults" else commented_blocks(text)
    for number, block in blocks:
        try:
            parsed = yaml.safe_load(block)
        except yaml.YAMLError as exc:
            bad.append(f"line {number}: {exc}")
            continue
        if not isinstance(parsed, dict) or len(parsed) != 1:
            bad.append(f"line {number}: not one `key: value`: {block!r}")
    assert not bad, f"{path}: commented examples that are not YAML:\n" + "\n".join(bad)


def test_room_examples_are_room_mappings() -> None:
    """The commented rooms example is a list of RoomConfig mappings, as the role's default."""
    text = (DEPLOY / "group_vars" / "all" / "main.yml").read_text()
    (block,) = [b for _, b in commented_blocks(text) if b.startswith("yahaml_voice_rooms:")]
    rooms = yaml.safe_load(block)["yahaml_voice_rooms"]
    assert all(isinstance(room, dict) and {"id", "name"} <= room.keys() for room in rooms), rooms
    default = yaml.safe_load((DEPLOY / "roles/yahaml_voice/defaults/main.yml").read_text())
    assert [r["id"] for r in rooms] == [r["id"] for r in default["yahaml_voice_rooms"]]


def test_docs_yaml_blocks_parse() -> None:
    """Every ```yaml block of docs/deploy.md is YAML."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"^```ya?ml\n(.*?)^```", text, re.M | re.S)
    assert blocks
    for block in blocks:
        yaml.safe_load(block)


def _ansible(inventory: Path, tmp_path: Path, var: str) -> dict[str, object]:
    """`ansible -m debug -a var=...` for every host of the inventory: values, no connection."""
    binary = shutil.which("ansible", path=str(ROOT / ".venv" / "bin")) or shutil.which("ansible")
    if binary is None:
        pytest.skip("ansible is not installed")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(DEPLOY / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="0",
    )
    proc = subprocess.run(
        [binary, "-i", str(inventory), "all", "--playbook-dir", str(DEPLOY), "-m", "ansible.builtin.debug",
         "-a", f"var={var}", "-e", f"yahaml_voice_secrets_dir={tmp_path / 'secrets'}"],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=DEPLOY,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The ad-hoc output: `<host> | SUCCESS => {json}` per host.
    found = re.findall(r"^(\S+) \| SUCCESS => (\{.*?^\})$", proc.stdout, re.M | re.S)
    return {host: json.loads(body)[var] for host, body in found}


def test_multi_host_turn_overrides_merge_per_host(tmp_path: Path) -> None:
    """A host's yahaml_voice_turn_host_overrides merges with the site's overrides."""
    turn = _ansible(
        DEPLOY / "inventories" / "multi-host" / "hosts.ini", tmp_path, "yahaml_voice_turn"
    )
    turn_host = turn["turn.club.example.org"]
    signal = turn["signal.club.example.org"]
    assert isinstance(turn_host, dict) and isinstance(signal, dict)
    # The TURN host: its own external_ip and the site's alt_tls_443 (which it lost before).
    assert turn_host["external_ip"] == "198.51.100.20/10.0.0.20"
    assert turn_host["alt_tls_443"] is True
    # The signaling host hands out the URL the TURN host serves.
    assert signal["alt_tls_443"] is True
    assert "turns:turn.club.example.org:443?transport=tcp" in signal["urls"]
    assert signal["secret"] == turn_host["secret"]
