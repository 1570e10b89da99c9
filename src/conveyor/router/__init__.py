"""The per-host data plane: listens on each app's public port and splits traffic by weight."""
