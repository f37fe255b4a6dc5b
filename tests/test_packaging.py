"""The wheel, installed into a fresh venv outside the checkout, is the whole product.

A sysadmin's deploy (deploy/ builds a wheel) gets exactly what this test gets: one import
name, the browser client and the coturn template as package data, SFU workers started
through the installed package. Nothing here can reach the checkout: the venv has no
access to it, and the commands run from a scratch directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, TEST_SECRET, ServerProcess

pytestmark = pytest.mark.timeout(900)


def _run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YAHAML_VOICE_", "PYTHON"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


class Install:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.venv = base / "venv"
        self.python = self.venv / "bin" / "python"
        self.command = self.venv / "bin" / "yahaml-voice"
        self.work = base / "work"  # cwd for everything: not the checkout
        self.work.mkdir()


def _version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    """Installs what `make release` builds: the wheel made from the sdist, checksummed."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    bin_dir = Path(sys.executable).parent
    # -o: the test's own venv is up to date; make must not reinstall it mid-suite.
    _run(
        "make",
        "-s",
        "-o",
        ".venv/.installed",
        "release",
        f"DIST={dist}",
        f"BIN={bin_dir}",
        cwd=ROOT,
    )
    version = _version()
    assert sorted(p.name for p in dist.iterdir()) == [
        "SHA256SUMS",
        f"yahaml_voice-{version}-py3-none-any.whl",
        f"yahaml_voice-{version}.tar.gz",
    ]
    _run("sha256sum", "--check", "--strict", "SHA256SUMS", cwd=dist)
    wheels = list(dist.glob("yahaml_voice-*.whl"))
    inst = Install(base)
    _run(sys.executable, "-m", "venv", inst.venv, cwd=base)
    _run(inst.python, "-m", "pip", "install", "-q", wheels[0], cwd=inst.work)
    yield inst


def _site_packages(inst: Install) -> Path:
    out = _run(
        inst.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=inst.work
    )
    return Path(out.stdout.strip())


def test_installs_one_import_name(install: Install) -> None:
    site = _site_packages(install)
    (record,) = site.glob("yahaml_voice-*.dist-info/RECORD")
    tops = set()
    for line in record.read_text().splitlines():
        path = line.split(",")[0]
        first = path.split("/")[0]
        if first.endswith(".dist-info") or first == ".." or not path:
            continue
        tops.add(first.removesuffix(".py"))
    assert tops == {"yahaml_voice"}
    names = [
        "yahaml_voice/client/index.html",
        "yahaml_voice/client/voice-room.js",
        "yahaml_voice/coturn/turnserver.conf.j2",
        "yahaml_voice/core/protocol.py",
        "yahaml_voice/server/app.py",
        "yahaml_voice/sfu/worker.py",
        "yahaml_voice/py.typed",
    ]
    listed = record.read_text()
    assert all(name in listed for name in names), [n for n in names if n not in listed]
    # And the old top-level names are free for other distributions.
    probe = _run(
        install.python,
        "-c",
        "import importlib.util, json, yahaml_voice; print(json.dumps({'file': "
        "yahaml_voice.__file__, 'taken': [n for n in ('server', 'sfu', 'client', 'core') "
        "if importlib.util.find_spec(n)]}))",
        cwd=install.work,
    )
    found = json.loads(probe.stdout)
    assert found["taken"] == []
    assert found["file"].startswith(str(site)), found


def test_turn_renders_from_the_install(install: Install) -> None:
    config = install.work / "turn.yaml"
    config.write_text(f"ice:\n  turn:\n    secret: {TEST_SECRET}\n    realm: turn.example.org\n")
    done = _run(install.command, "--config", config, "turn", cwd=install.work, timeout=60)
    assert f"static-auth-secret={TEST_SECRET}" in done.stdout
    assert "realm=turn.example.org" in done.stdout
    assert "use-auth-secret" in done.stdout.splitlines()


def test_serve_from_the_install(install: Install) -> None:
    server = ServerProcess(
        install.work, command=[str(install.command)], cwd=install.work, workers=1
    )
    try:
        server.start(timeout=60)
        # Its SFU worker child came from the install too (python -m yahaml_voice sfu).
        health = server.wait_healthy(timeout=60, workers=1)
        assert health["status"] == "ok" and health["workers"] == 1
        assert health["version"] == _version()
        page = httpx.get(server.url + "/", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "voice-room" in page.text or "app.js" in page.text
        module = httpx.get(server.url + "/voice-room.js", timeout=10)
        assert module.status_code == 200
        assert module.headers["content-type"].startswith("text/javascript")
    finally:
        server.stop()
    assert str(ROOT) not in server.log_tail()


def test_the_install_says_its_version(install: Install) -> None:
    """`--version` names the version pyproject.toml gives (so does /healthz, above)."""
    done = _run(install.command, "--version", cwd=install.work)
    assert done.stdout.strip() == f"yahaml-voice {_version()}"


def test_release_refuses_a_version_without_a_changelog_entry(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        (checkout / name).write_bytes((ROOT / name).read_bytes())
    (checkout / "CHANGELOG.md").write_text("# Changelog\n\n## 0.0.1 (old)\n")
    done = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "release", f"BIN={Path(sys.executable).parent}"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"CHANGELOG.md has no '## {_version()}' entry" in done.stderr
    assert not (checkout / "dist").exists()
