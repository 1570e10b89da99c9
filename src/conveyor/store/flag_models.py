"""Feature flags' tables (models.py re-exports them): flags, their history, guarded
rollouts, client tokens and the SDKs that registered."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from conveyor.store.models import Base, utcnow


class Flag(Base):
    """A feature flag of one app in one environment: its state (protocol.flags.FlagState).

    A flag conveyor.yml declares has no row until its first change (it is off until then).
    """

    __tablename__ = "flags"
    __table_args__ = (UniqueConstraint("app_id", "environment", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(Text)  # FlagState as JSON
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(100))

    changes: Mapped[list[FlagChange]] = relationship(
        back_populates="flag", cascade="all, delete-orphan", order_by="FlagChange.id"
    )
    rollouts: Mapped[list[FlagRollout]] = relationship(
        back_populates="flag", cascade="all, delete-orphan", order_by="FlagRollout.id"
    )


class FlagChange(Base):
    """One change of a flag: who, when, its state before (none: created) and after."""

    __tablename__ = "flag_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("flags.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    by: Mapped[str] = mapped_column(String(100))
    before: Mapped[str | None] = mapped_column(Text, default=None)
    after: Mapped[str] = mapped_column(Text)
    # why, when it was not a person's change (a guarded rollout's step, the judge's evidence)
    note: Mapped[str | None] = mapped_column(Text, default=None)

    flag: Mapped[Flag] = relationship(back_populates="changes")


class FlagRollout(Base):
    """A guarded rollout of a flag: its percentage raised step by step, each step judged.

    The server drives it (deploy/flagrollouts.py) from this record, so a restarted
    server continues where it was: the step, when it began, the judge's state.
    """

    __tablename__ = "flag_rollouts"

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("flags.id", ondelete="CASCADE"), index=True)
    steps: Mapped[str] = mapped_column(Text)  # JSON list of percentages
    step_pause: Mapped[float] = mapped_column()  # seconds each step lasts at least
    step: Mapped[int] = mapped_column(Integer, default=0)  # index into steps
    step_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    # running | completed | stopped (the judge: a regression) | gave_up (too few requests
    # with the flag on to judge, flags.give_up) | cancelled (a person)
    state: Mapped[str] = mapped_column(String(20), default="running", index=True)
    judge: Mapped[str | None] = mapped_column(Text, default=None)  # JudgeState as JSON
    judgement: Mapped[str | None] = mapped_column(Text, default=None)  # the judge's last word
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    started_by: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)

    flag: Mapped[Flag] = relationship(back_populates="rollouts")


class FlagToken(Base):
    """A client token of the Unleash SDKs: reads one app and environment's flags only."""

    __tablename__ = "flag_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class FlagClient(Base):
    """An SDK instance that registered or sent metrics, with what it counted of each flag."""

    __tablename__ = "flag_clients"
    __table_args__ = (UniqueConstraint("token_id", "instance_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("flag_tokens.id", ondelete="CASCADE"))
    app_name: Mapped[str] = mapped_column(String(255))
    instance_id: Mapped[str] = mapped_column(String(255))
    sdk_version: Mapped[str] = mapped_column(String(255), default="")
    # {flag: {"yes": n, "no": n, "variants": {name: n}}}, summed over its reports
    counts: Mapped[str] = mapped_column(Text, default="{}")
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
