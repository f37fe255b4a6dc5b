"""The proxy and coturn roles make a self-signed certificate again when it went stale.

The roles' own check and decision (their tls-selfsigned.yml tasks, rendered with Ansible's
templar) are run with real openssl against certificates made for the purpose: a fresh one for the
right name is kept; one near its end, one for another name or none at all is renewed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = ROOT / "deploy" / "roles"


def _stale(role: str, variables: dict[str, Any]) -> bool:
    """Run the role's check task (its argv, real openssl) and its decision (set_fact)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    tasks = yaml.safe_load((ROLES / role / "tasks" / "tls-selfsigned.yml").read_text())
    [check] = [t for t in tasks if t["name"] == "Check the self-signed certificate"]
    [decide] = [t for t in tasks if t["name"] == "Decide whether to make it again"]
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    templar = Templar(loader=DataLoader(), variables=defaults | variables)
    argv = [str(templar.template(arg)) for arg in check["ansible.builtin.command"]["argv"]]
    run = subprocess.run(argv, capture_output=True, text=True)
    templar.available_variables = (
        defaults | variables | {check["register"]: {"rc": run.returncode, "stdout": run.stdout}}
    )
    [(_, expression)] = decide["ansible.builtin.set_fact"].items()
    # As the tasks' `when: ..._stale | bool` reads it (the template may give a string).
    return str(templar.template(expression)).strip().lower() in ("true", "yes", "1")


def _make(path: Path, name: str, days: int) -> None:
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ),
            *("-nodes", "-days", str(days), "-subj", f"/CN={name}"),
            *("-addext", f"subjectAltName=DNS:{name}", "-keyout", str(path.with_suffix(".key"))),
            *("-out", str(path)),
        ],
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize("role", ["proxy", "coturn"])
def test_a_stale_self_signed_certificate_is_made_again(role: str, tmp_path: Path) -> None:
    cert = tmp_path / "fullchain.pem"
    variables: dict[str, Any] = {
        "proxy": {"proxy_selfsigned_cert": str(cert), "proxy_server_name": "voice.test"},
        "coturn": {"coturn_tls_dir": str(tmp_path), "coturn_tls_name": "voice.test"},
    }[role]
    assert _stale(role, variables)  # none yet
    _make(cert, "voice.test", 825)
    assert not _stale(role, variables)
    _make(cert, "voice.test", 20)  # within the 30 days of proxy/coturn_selfsigned_renew_days
    assert _stale(role, variables)
    _make(cert, "old-name.test", 825)
    assert _stale(role, variables)
