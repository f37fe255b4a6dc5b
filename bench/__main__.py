"""`python -m bench [NAME ...] [-- ARGS]`: run benchmarks; results land in bench/results/.

With no name every benchmark but the soak runs with its defaults (what `make bench`
does; `make soak` runs the soak). Each benchmark is a module with `main(argv) -> int`;
register it in BENCHMARKS.
"""

from __future__ import annotations

import importlib
import sys

# name -> module (imported only when run)
BENCHMARKS: dict[str, str] = {
    "join": "bench.join_latency",
    "signaling": "bench.signaling_load",
    "storm": "bench.join_storm",
    "broadcast": "bench.broadcast",
    "sfu": "bench.sfu_forwarding",
    "cascade": "bench.sfu_cascade",
    "floor": "bench.sfu_floor",
    "grant": "bench.floor_grant",
    "roster": "bench.roster",
    "soak": "bench.soak",
}
# Run only when named: minutes long, not a speed figure.
ONLY_BY_NAME = {"soak"}


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks:", ", ".join(BENCHMARKS))
        return 0
    names = [a for a in argv if a in BENCHMARKS]
    rest = argv[argv.index("--") + 1 :] if "--" in argv else []
    unknown = [a for a in argv if a not in BENCHMARKS and a != "--" and a not in rest]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    status = 0
    for name in names or [n for n in BENCHMARKS if n not in ONLY_BY_NAME]:
        print(f"== {name} ==", flush=True)
        module = importlib.import_module(BENCHMARKS[name])
        status |= module.main(rest if names else [])
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
