"""Files that ship inside the package (the browser client, the coturn template).

Read through importlib.resources so that an editable checkout and a wheel installed
anywhere find the same files; yahaml-voice installs as plain files, never zipped.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_path(*parts: str) -> Path:
    """The on-disk path of `yahaml_voice/<parts...>`."""
    resource = files("yahaml_voice").joinpath(*parts)
    if not isinstance(resource, Path):
        raise RuntimeError(f"yahaml_voice is not installed as files: {resource!r}")
    return resource
