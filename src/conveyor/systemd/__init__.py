"""systemd units for the server and the agent: `conveyor service install`."""
