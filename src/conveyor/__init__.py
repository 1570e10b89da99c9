"""conveyor: self-hosted continuous deployment."""

__version__ = "0.1.0"
