"""The controller's brain: desired state per host, written before agents act on it."""
