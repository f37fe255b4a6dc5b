"""What the server and the SFU worker share: wire protocol, configuration, tokens."""
