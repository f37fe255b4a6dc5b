"""Amateur-radio callsign validation.

A callsign is an ITU prefix (1-3 characters with at least one letter, ending before a
digit) followed by a digit and a suffix of 1-4 letters, e.g. W1AW, G4ABC, VE3XYZ, 9A1AA,
3DA0RS. Operators add a portable prefix (VE3/W1AW) and/or a suffix (/P, /M, /MM, /AM,
/QRP, /A, /digit). We validate the shape, not licence databases.
"""

from __future__ import annotations

import re

_BASE = r"(?:[A-Z0-9]{0,2}[A-Z]|[0-9][A-Z]{1,2}|[A-Z][0-9])[0-9]{1,2}[A-Z0-9]{0,3}[A-Z]"
_PREFIX = r"(?:[A-Z0-9]{1,4}[0-9]?)"
_SUFFIX = r"(?:P|M|MM|AM|QRP|QRPP|A|LH|[0-9]|[A-Z]{1,2}[0-9]?)"
_PATTERN = re.compile(rf"^(?:{_PREFIX}/)?{_BASE}(?:/{_SUFFIX})?$")


class CallsignError(ValueError):
    """The text is not a callsign; the message says why in words an operator understands."""


def normalize_callsign(text: str) -> str:
    """Upper-cased, trimmed callsign, or CallsignError."""
    if not isinstance(text, str):
        raise CallsignError("callsign must be a string")
    # Spaces around a typed callsign are trimmed; newlines, tabs and other control
    # characters are refused (they would end up in logs and in every roster).
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in text):
        raise CallsignError(f"callsign {text!r} contains a control character")
    if not text.isascii():
        raise CallsignError(f"callsign {text!r} may only contain letters, digits and '/'")
    call = text.strip(" ").upper()
    if not call:
        raise CallsignError("callsign is empty")
    if len(call) > 20:
        raise CallsignError("callsign is longer than 20 characters")
    if not re.fullmatch(r"[A-Z0-9/]+", call, re.ASCII):
        raise CallsignError(f"callsign {text!r} may only contain letters, digits and '/'")
    if not _PATTERN.fullmatch(call):
        raise CallsignError(
            f"{text!r} is not an amateur callsign (expected e.g. W1AW, G4ABC/P, VE3/W1AW)"
        )
    return call
