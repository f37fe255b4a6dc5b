"""The Ansible deploy (deploy/), tested for real by tests/deploy/run.sh.

run.sh lints the playbook, converges THIS machine (packages, users, services on
loopback), converges again expecting changed=0, probes what runs (verify.py) and stops
it all; it needs root and skips otherwise. The knob check below needs nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_every_role_knob_is_documented_in_group_vars() -> None:
    """A sysadmin finds every knob in one file: deploy/group_vars/all/main.yml."""
    documented = (DEPLOY / "group_vars" / "all" / "main.yml").read_text()
    missing = []
    for defaults in sorted(DEPLOY.glob("roles/*/defaults/main.yml")):
        for key in yaml.safe_load(defaults.read_text()) or {}:
            if not re.search(rf"^(# )?{re.escape(key)}:", documented, re.M):
                missing.append(f"{defaults.parent.parent.name}: {key}")
    assert not missing, f"role defaults missing from group_vars/all/main.yml: {missing}"


@pytest.mark.skipif(os.geteuid() != 0, reason="deploy converge needs root (converges this machine)")
@pytest.mark.timeout(1500)
def test_deploy_converges_this_machine_idempotently_and_verifies() -> None:
    """lint + syntax, converge of the previous release (umask 077), the upgrade with two
    clients in a room (seats kept, audio back, gap measured), converge and --check with
    changed=0, verify, rollback and roll forward, uninstall, --check on the uninstalled
    host, nothing left behind (see run.sh)."""
    proc = subprocess.run(
        ["bash", str(ROOT / "tests" / "deploy" / "run.sh")],
        capture_output=True,
        text=True,
        timeout=1480,
        check=False,
        cwd=ROOT,
    )
    output = proc.stdout + proc.stderr
    print(output)
    assert proc.returncode == 0 and "deploy-test: PASSED" in proc.stdout, output[-6000:]
