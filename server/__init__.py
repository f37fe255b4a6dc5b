"""yahaml-voice signaling server."""
