"""The deploy's examples parse and render as documented, without converging anything.

Every commented knob of deploy/group_vars/all/main.yml (and of the example inventories)
is YAML a sysadmin can uncomment; every ```yaml block of docs/deploy.md parses; the
multi-host example renders the TURN settings a host-level override merges into (the
TURN host keeps the site's alt_tls_443, the signaling host hands out turns:...:443), and
the signaling host's rendered server configuration takes its ICE URLs from the TURN host's
own settings (its host_vars), not from its own.
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
    inventory = DEPLOY / "inventories" / "multi-host" / "hosts.ini"
    local = _ansible(inventory, tmp_path, "yahaml_voice_turn_local")
    turn = _ansible(inventory, tmp_path, "yahaml_voice_turn")
    turn_host = local["turn.club.example.org"]
    signal = turn["signal.club.example.org"]
    assert isinstance(turn_host, dict) and isinstance(signal, dict)
    # The TURN host: its own external_ip and the site's alt_tls_443 (which it lost before).
    assert turn_host["external_ip"] == "198.51.100.20/10.0.0.20"
    assert turn_host["alt_tls_443"] is True
    # The signaling host hands out the URL the TURN host serves.
    assert signal["alt_tls_443"] is True
    assert "turns:turn.club.example.org:443?transport=tcp" in signal["urls"]
    assert signal["urls"] == turn_host["urls"]
    assert signal["secret"] == turn_host["secret"]


# The TURN host's own settings, in its host_vars only: other ports, a realm, its own name,
# and 443 (which the site no longer sets for everyone).
TURN_HOST_VARS = """\
yahaml_voice_turn_domain: relay.club.example.org
yahaml_voice_turn_host_overrides:
  external_ip: 198.51.100.20/10.0.0.20
  listening_port: 3479
  tls_listening_port: 5350
  alt_tls_443: true
  realm: relay.club.example.org
  total_quota: 3000
"""

RENDER_PLAYBOOK = """\
- name: Render the server configuration the yahaml_voice role would write (no connection)
  hosts: yahaml_voice_server
  gather_facts: false
  roles:
    - render
"""


def _render_server_config(site: Path, tmp_path: Path) -> dict[str, dict[str, object]]:
    """Each server host's yahaml-voice.yaml, rendered from the role's own template and vars.

    A stand-in role carries the yahaml_voice role's defaults and vars at their precedence
    (symlinks) and one controller-side task, so nothing connects to the example's hosts;
    the playbook sits next to a link to deploy/group_vars, as site.yml does.
    """
    binary = shutil.which("ansible-playbook", path=str(ROOT / ".venv" / "bin")) or shutil.which(
        "ansible-playbook"
    )
    if binary is None:
        pytest.skip("ansible-playbook is not installed")
    play = tmp_path / "play"
    role = play / "roles" / "render"
    for part in ("defaults", "vars", "tasks"):
        (role / part).mkdir(parents=True)
    for part in ("defaults", "vars"):
        (role / part / "main.yml").symlink_to(DEPLOY / "roles" / "yahaml_voice" / part / "main.yml")
    template = DEPLOY / "roles" / "yahaml_voice" / "templates" / "yahaml-voice.yaml.j2"
    (role / "tasks" / "main.yml").write_text(
        "- name: The configuration file's content\n"
        "  ansible.builtin.debug:\n"
        f"    msg: \"{{{{ lookup('ansible.builtin.template', '{template}') }}}}\"\n"
    )
    (play / "group_vars").symlink_to(DEPLOY / "group_vars")
    (play / "render.yml").write_text(RENDER_PLAYBOOK)
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(DEPLOY / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(play / "roles"),
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="0",
    )
    proc = subprocess.run(
        [binary, "-i", str(site / "hosts.ini"), str(play / "render.yml"),
         "-e", f"yahaml_voice_secrets_dir={tmp_path / 'secrets'}"],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=DEPLOY,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The default callback: `ok: [<host>] => {json}` per host.
    found = re.findall(r"^ok: \[(\S+)\] => (\{.*?^\})$", proc.stdout, re.M | re.S)
    return {host: yaml.safe_load(json.loads(body)["msg"]) for host, body in found}


def test_multi_host_server_ice_urls_follow_the_turn_hosts_own_settings(tmp_path: Path) -> None:
    """The signaling host's ICE config is built from the TURN host's merged settings.

    The TURN host's host_vars move its ports, name, realm and alt_tls_443 away from the
    site's values; the server configuration rendered on the signaling host (whose own
    merged settings still say 3478/5349 and no 443) must hand out exactly what the TURN
    host's coturn serves, followed by a second TURN host's URLs (its own name, the site's
    ports, no 443), with the quotas summed.
    """
    site = tmp_path / "site"
    shutil.copytree(DEPLOY / "inventories" / "multi-host", site)
    site_vars = site / "group_vars" / "yahaml_voice.yml"
    text = site_vars.read_text()
    assert "yahaml_voice_turn_overrides:\n  alt_tls_443: true\n" in text
    site_vars.write_text(text.replace("yahaml_voice_turn_overrides:\n  alt_tls_443: true\n", ""))
    (site / "host_vars" / "turn.club.example.org.yml").write_text("---\n" + TURN_HOST_VARS)
    # A second TURN host with the site's settings but a name of its own.
    hosts = (site / "hosts.ini").read_text()
    second = "turn2.club.example.org ansible_host=198.51.100.21 yahaml_voice_private_ip=10.0.0.21\n"
    hosts = hosts.replace("[coturn]\nturn.club.example.org ansible_host=198.51.100.20 "
                          "yahaml_voice_private_ip=10.0.0.20\n",
                          "[coturn]\nturn.club.example.org ansible_host=198.51.100.20 "
                          "yahaml_voice_private_ip=10.0.0.20\n" + second)  # fmt: skip
    assert second in hosts
    (site / "hosts.ini").write_text(hosts)
    (site / "host_vars" / "turn2.club.example.org.yml").write_text(
        "---\nyahaml_voice_turn_domain: turn2.club.example.org\n"
    )

    # The TURN host's own mapping (what its coturn and firewall get).
    local = _ansible(site / "hosts.ini", tmp_path, "yahaml_voice_turn_local")
    turn_host = local["turn.club.example.org"]
    assert isinstance(turn_host, dict)
    assert (turn_host["listening_port"], turn_host["tls_listening_port"]) == (3479, 5350)
    assert turn_host["alt_tls_443"] is True and turn_host["realm"] == "relay.club.example.org"
    # The signaling host's own merged settings differ: the bug was to build the URLs from them.
    signal_local = local["signal.club.example.org"]
    assert isinstance(signal_local, dict)
    assert (signal_local["listening_port"], signal_local["alt_tls_443"]) == (3478, False)

    configs = _render_server_config(site, tmp_path)
    assert set(configs) == {"signal.club.example.org"}
    ice = configs["signal.club.example.org"]["ice"]
    assert isinstance(ice, dict)
    # Every TURN host's own URLs, in inventory order: the second one without 443.
    assert ice["turn"]["urls"] == [
        "turn:relay.club.example.org:3479?transport=udp",
        "turn:relay.club.example.org:3479?transport=tcp",
        "turns:relay.club.example.org:5350?transport=tcp",
        "turns:relay.club.example.org:443?transport=tcp",
        "turn:turn2.club.example.org:3478?transport=udp",
        "turn:turn2.club.example.org:3478?transport=tcp",
        "turns:turn2.club.example.org:5349?transport=tcp",
    ]
    assert ice["turn"]["urls"][:4] == turn_host["urls"]
    assert ice["stun_urls"] == [
        "stun:relay.club.example.org:3479",
        "stun:turn2.club.example.org:3478",
    ]
    assert ice["turn"]["realm"] == "relay.club.example.org"
    assert ice["turn"]["total_quota"] == 3000 + 1200
    assert ice["turn"]["secret"] == turn_host["secret"]
    assert len(ice["turn"]["secret"]) >= 32
