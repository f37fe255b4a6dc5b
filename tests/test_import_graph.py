"""The import graph, read from the source: core <- server, core <- sfu, cli wires both.

The shared core (wire protocol, config, tokens) is what a second process, a recorder or
a radio gateway will import; it must not drag a server or an SFU with it, and the server
and the SFU must stay separable processes. Checked with `ast`, so a lazy import inside a
function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Package -> the folder its source lives in (as pyproject.toml maps them).
PACKAGES = {
    "yahaml_voice.core": ROOT / "yahaml_voice" / "core",
    "yahaml_voice.server": ROOT / "server",
    "yahaml_voice.sfu": ROOT / "sfu",
}
# Who may import whom (inside yahaml_voice).
ALLOWED = {
    "yahaml_voice.core": {"yahaml_voice.core"},
    "yahaml_voice.server": {"yahaml_voice.core", "yahaml_voice.server"},
    "yahaml_voice.sfu": {"yahaml_voice.core", "yahaml_voice.sfu"},
}
OLD_TOP_LEVEL = {"server", "sfu", "client", "core"}


def _imports(package: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in one module, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
                # `from . import x` may name a module: count both spellings.
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            else:
                assert node.module is not None
                module = node.module
            found.append((node.lineno, module))
    return found


def _modules() -> list[tuple[str, Path]]:
    return [(pkg, path) for pkg, root in PACKAGES.items() for path in sorted(root.glob("*.py"))]


def _owner(module: str) -> str | None:
    for pkg in PACKAGES:
        if module == pkg or module.startswith(pkg + "."):
            return pkg
    return None


def test_the_three_packages_have_source() -> None:
    counts = {pkg: len(list(root.glob("*.py"))) for pkg, root in PACKAGES.items()}
    assert all(count >= 3 for count in counts.values()), counts


def test_imports_flow_one_way() -> None:
    wrong = []
    for pkg, path in _modules():
        for line, module in _imports(pkg, path):
            top = module.split(".")[0]
            if top in OLD_TOP_LEVEL:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports top-level {module}")
                continue
            owner = _owner(module)
            if module.startswith("yahaml_voice") and owner is None and module != "yahaml_voice":
                # yahaml_voice.cli (or another wiring module): only the entry point imports it.
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            elif owner is not None and owner not in ALLOWED[pkg]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({pkg}) imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    # The rule above must be able to fail: a relative import out of sfu into server.
    bad = tmp_path / "bad.py"
    bad.write_text("from ..server.rooms import RoomService\nimport yahaml_voice.sfu.worker\n")
    found = {module for _, module in _imports("yahaml_voice.core", bad)}
    assert "yahaml_voice.server.rooms" in found
    assert _owner("yahaml_voice.server.rooms") not in ALLOWED["yahaml_voice.sfu"]
    assert "yahaml_voice.sfu.worker" in found


def test_private_aiortc_names_only_in_aiortc_private() -> None:
    """Nothing in sfu/ but aiortc_private.py reaches under another object's API.

    Any `x._name` where x is not self/cls, and any import of a private module
    (`pylibsrtp._binding`), counts.
    """
    wrong = []
    for path in sorted((ROOT / "sfu").glob("*.py")):
        if path.name == "aiortc_private.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                if node.attr.startswith("__") and node.attr.endswith("__"):
                    continue
                base = node.value
                if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                    continue
                wrong.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                if node.module != "__future__" and any(
                    part.startswith("_") for part in node.module.split(".")
                ):
                    wrong.append(f"{path.name}:{node.lineno} from {node.module}")
    assert not wrong, "\n".join(wrong)


def test_aiortc_private_refuses_another_version() -> None:
    from yahaml_voice.sfu import aiortc_private

    aiortc_private.check_versions()  # the installed ones are the pinned ones
    try:
        aiortc_private.check_versions({"aiortc": "0.0.1"})
    except aiortc_private.VersionMismatch as exc:
        assert "aiortc 1.16.0 (need 0.0.1)" in str(exc)
    else:
        raise AssertionError("a version mismatch was not refused")


def test_pins_match_pyproject() -> None:
    import tomllib

    from yahaml_voice.sfu.aiortc_private import PINNED

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, wanted in PINNED.items():
        assert f"{name}=={wanted}" in deps, f"pyproject.toml must pin {name}=={wanted}"
