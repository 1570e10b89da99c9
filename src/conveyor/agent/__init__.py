"""The host wing: an agent that dials out to the server and converges its host."""
