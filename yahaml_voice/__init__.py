"""yahaml-voice: voice rooms and nets for amateur-radio clubs.

`core` (protocol, config, tokens) is shared; `server` and `sfu` import it and never each
other; `cli` is the one place that wires them together.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one place the version is written is pyproject.toml; this reads the installed one.
    __version__ = version("yahaml-voice")
except PackageNotFoundError:  # a bare checkout on sys.path, never installed
    __version__ = "0+unknown"
