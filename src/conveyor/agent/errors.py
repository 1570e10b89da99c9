"""Errors the host side raises: each says what was wrong, where, and what to do."""

from __future__ import annotations


class AgentError(Exception):
    """Base of the errors raised on a host."""


class InstallError(AgentError):
    """A release could not be downloaded, verified, unpacked, hooked or switched to."""


class StartError(AgentError):
    """An instance could not be started, or exited as soon as it was started."""


class MigrationFailed(AgentError):
    """A release's migrate hook failed, timed out or was interrupted (now or on an earlier run)."""
