"""yahaml-voice: voice rooms and nets for amateur-radio clubs.

`core` (protocol, config, tokens) is shared; `server` and `sfu` import it and never each
other; `cli` is the one place that wires them together.
"""
