"""Just enough SDP reading to tell whether a description would let its author send media.

A participant who may not publish (a listener) must never get audio to its peers in mesh
mode, where the server does not touch media: the signal carrying an offer or answer that
would send is refused instead. Directions follow RFC 8866 section 6.7 and RFC 3264: an
m-section's own direction attribute wins, else the session-level one, else `sendrecv`.
A section with port 0 is disabled (RFC 3264 section 6) unless it is `bundle-only`
(RFC 8843), which is how an offer marks an active bundled section.
"""

from __future__ import annotations

from dataclasses import dataclass

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
SENDING = ("sendrecv", "sendonly")
# Data channels carry no audio; every other media kind could.
NON_MEDIA = ("application",)


@dataclass(frozen=True)
class MediaSection:
    kind: str
    port: int
    direction: str
    bundle_only: bool

    @property
    def sends(self) -> bool:
        """Whether the author of the description would send on this section."""
        if self.kind in NON_MEDIA:
            return False
        if self.port == 0 and not self.bundle_only:
            return False
        return self.direction in SENDING


def media_sections(sdp: str) -> list[MediaSection]:
    """The m-sections of `sdp`, each with its effective direction."""
    session_direction = "sendrecv"
    sections: list[dict[str, object]] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            fields = line[2:].split()
            port = fields[1].split("/")[0] if len(fields) > 1 else ""
            sections.append(
                {
                    "kind": fields[0].lower() if fields else "",
                    "port": int(port) if port.isdigit() else -1,
                    "direction": None,
                    "bundle_only": False,
                }
            )
        elif line.startswith("a="):
            attribute = line[2:].split(":", 1)[0].strip().lower()
            if attribute in DIRECTIONS:
                if sections:
                    sections[-1]["direction"] = attribute
                else:
                    session_direction = attribute
            elif attribute == "bundle-only" and sections:
                sections[-1]["bundle_only"] = True
    return [
        MediaSection(
            kind=str(s["kind"]),
            port=int(s["port"]),  # type: ignore[call-overload]
            direction=str(s["direction"] or session_direction),
            bundle_only=bool(s["bundle_only"]),
        )
        for s in sections
    ]


def sends_media(sdp: str) -> bool:
    """True if any media section of this offer or answer would send (audio or otherwise)."""
    return any(section.sends for section in media_sections(sdp))
