"""yahaml-voice selective forwarding worker."""
