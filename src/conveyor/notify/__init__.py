"""Notifications: events (a failed run, a failed or rolled back deployment, an approval
gate, a success) become Apprise messages, queued with the change and delivered apart."""

from conveyor.notify.announce import Announcer
from conveyor.notify.delivery import Courier, Policy, shown_url
from conveyor.notify.messages import KINDS, Message

__all__ = ["KINDS", "Announcer", "Courier", "Message", "Policy", "shown_url"]
