"""The secret store: values (or commands) per app and environment, sealed at rest.

The sealer (conveyor.sealing.Sealer over the server's key file) rides on the session
factory (`session.info["sealer"]`, see store.db.session_factory): whoever holds a
session can open what it reads, and nothing else needs to carry the key around.
Values are opened only to be handed to a step or an instance, never to a log.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.sealing import InvalidToken, Sealer
from conveyor.store.models import EVERY_ENVIRONMENT, App, ResolvedSecret, Secret

KINDS = ("value", "command")


class SecretStoreError(Exception):
    """The store cannot be opened with this key file (or has no key at all)."""


@dataclass(frozen=True)
class SecretScope:
    """What `secret list` shows of a secret: never its value."""

    name: str
    environment: str | None  # None: every environment
    kind: str


def sealer_of(session: Session) -> Sealer:
    sealer = session.info.get("sealer")
    if not isinstance(sealer, Sealer):
        raise SecretStoreError("this session has no key file to open secrets with")
    return sealer


def _open(session: Session, token: str) -> str:
    """Open one value (the sealer is looked up only when there is something to open)."""
    return sealer_of(session).open(token)


def _scope(environment: str | None) -> str:
    return environment or EVERY_ENVIRONMENT


def set_secret(
    session: Session, app: App, name: str, environment: str | None, value: str, kind: str
) -> None:
    """Set a value (or a command) for one environment, or for every one (not committed)."""
    if kind not in KINDS:
        raise ValueError(f"unknown secret kind {kind!r}")
    sealed = sealer_of(session).seal(value)
    scope = _scope(environment)
    row = next((s for s in app.secrets if s.name == name and s.environment == scope), None)
    if row is None:
        app.secrets.append(
            Secret(name=name, environment=scope, kind=kind, value=sealed, sealed=True)
        )
    else:
        row.kind, row.value, row.sealed = kind, sealed, True


def delete_secret(session: Session, app: App, name: str, environment: str | None) -> bool:
    """Remove one scope of a secret (not committed); False when there was none."""
    scope = _scope(environment)
    row = next((s for s in app.secrets if s.name == name and s.environment == scope), None)
    if row is None:
        return False
    app.secrets.remove(row)
    if row.kind == "command":
        for resolved in session.scalars(
            select(ResolvedSecret).where(
                ResolvedSecret.app_id == app.id,
                ResolvedSecret.name == name,
                *([ResolvedSecret.environment == scope] if environment else []),
            )
        ):
            session.delete(resolved)
    return True


def list_secrets(app: App) -> list[SecretScope]:
    return sorted(
        (SecretScope(s.name, s.environment or None, s.kind) for s in app.secrets),
        key=lambda s: (s.name, s.environment or ""),
    )


def _effective(app: App, environment: str | None) -> dict[str, Secret]:
    """Per name, the row that applies: the environment's own, else every environment's."""
    rows: dict[str, Secret] = {}
    for s in app.secrets:
        if s.environment == EVERY_ENVIRONMENT:
            rows.setdefault(s.name, s)
    for s in app.secrets:
        if environment and s.environment == environment:
            rows[s.name] = s
    return rows


def secret_values(session: Session, app: App, environment: str | None) -> dict[str, str]:
    """The opened values that apply to an environment (None: the every-environment ones).

    A command's value is its last output for that environment, once a deployment ran it.
    """
    values: dict[str, str] = {}
    resolved: dict[str, str] = {}
    if environment:
        resolved = {
            r.name: r.value
            for r in session.scalars(
                select(ResolvedSecret).where(
                    ResolvedSecret.app_id == app.id, ResolvedSecret.environment == environment
                )
            )
        }
    for name, row in _effective(app, environment).items():
        if row.kind == "value":
            values[name] = _open(session, row.value)
        elif name in resolved:
            values[name] = _open(session, resolved[name])
    for name, token in resolved.items():  # commands conveyor.yml gives, with no row here
        if name not in values:
            values[name] = _open(session, token)
    return values


def every_value(session: Session, app: App) -> list[str]:
    """Every value of the app, in any environment, commands' outputs too: what to mask."""
    values = [_open(session, s.value) for s in app.secrets if s.kind == "value"]
    resolved = session.scalars(select(ResolvedSecret.value).where(ResolvedSecret.app_id == app.id))
    return values + [_open(session, v) for v in resolved]


def secret_commands(
    session: Session,
    app: App,
    environment: str,
    names: list[str],
    defaults: dict[str, str] | None = None,
) -> dict[str, str]:
    """Of these names, those whose value comes from a command here: name -> command.

    A value or command set on the server for the name wins over the command conveyor.yml
    gives for it (`defaults`).
    """
    rows = _effective(app, environment)
    commands = {}
    for name in names:
        if name in rows:
            if rows[name].kind == "command":
                commands[name] = _open(session, rows[name].value)
        elif defaults and name in defaults:
            commands[name] = defaults[name]
    return commands


def store_resolved(session: Session, app: App, environment: str, values: dict[str, str]) -> None:
    """Keep the commands' outputs of a deployment, sealed (not committed)."""
    sealer = sealer_of(session)
    rows = {
        r.name: r
        for r in session.scalars(
            select(ResolvedSecret).where(
                ResolvedSecret.app_id == app.id, ResolvedSecret.environment == environment
            )
        )
    }
    for name, value in values.items():
        sealed = sealer.seal(value)
        if name in rows:
            rows[name].value = sealed
        else:
            session.add(
                ResolvedSecret(app_id=app.id, environment=environment, name=name, value=sealed)
            )


def open_store(session: Session) -> int:
    """Check the key opens the store, seal what an older conveyor left in plain text.

    Returns how many plain values were sealed (committed). Raises SecretStoreError,
    naming no value, when the key file does not open a sealed value.
    """
    sealer = sealer_of(session)
    sample = session.scalar(select(Secret).where(Secret.sealed.is_(True)).limit(1))
    if sample is not None:
        try:
            sealer.open(sample.value)
        except InvalidToken:
            total = session.scalar(select(func.count()).select_from(Secret)) or 0
            raise SecretStoreError(
                f"the key file {sealer.path} does not open the {total} secret(s) in the "
                "database: it is not the key they were sealed with. Put back the key file "
                "from the same backup as the database (or the one before a rotation)."
            ) from None
    plain = session.scalars(select(Secret).where(Secret.sealed.is_(False))).all()
    for row in plain:
        row.value, row.sealed = sealer.seal(row.value), True
    session.commit()
    return len(plain)


def reseal_all(session: Session) -> int:
    """Seal every value again with the key file's newest key (not committed)."""
    sealer = sealer_of(session)
    count = 0
    for row in session.scalars(select(Secret)):
        row.value = sealer.reseal(row.value)
        count += 1
    for resolved in session.scalars(select(ResolvedSecret)):
        resolved.value = sealer.reseal(resolved.value)
        count += 1
    return count


def has_secrets(session: Session) -> bool:
    return session.scalar(select(func.count()).select_from(Secret)) != 0
