"""The secret store: sealed at rest, per environment, plain values of 0007 sealed at start,
a wrong or missing key refused, rotation."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from conveyor.sealing import KeyFileError, Sealer, create_key_file, read_keys
from conveyor.server.secretkey import KEY_FILE, open_secret_store, rotate
from conveyor.store.db import MIGRATIONS, make_engine, migrate, session_factory
from conveyor.store.models import App
from conveyor.store.secrets import (
    SecretStoreError,
    delete_secret,
    list_secrets,
    secret_commands,
    secret_values,
    set_secret,
    store_resolved,
)

PLAIN = "plain-Vq4-from-an-older-server"


def _engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'c.db'}")


def _store(tmp_path: Path) -> tuple[sessionmaker[Session], Sealer]:
    engine = _engine(tmp_path)
    migrate(engine)
    sessions = session_factory(engine)
    return sessions, open_secret_store(tmp_path, sessions)


def _app(session: Session) -> App:
    app = App(name="shop", repo_url="r", webhook_secret="w")
    session.add(app)
    session.flush()
    return app


def test_an_environments_own_value_wins_over_the_shared_one(tmp_path: Path) -> None:
    sessions, _ = _store(tmp_path)
    with sessions() as s:
        app = _app(s)
        set_secret(s, app, "DB", None, "shared-db", "value")
        set_secret(s, app, "DB", "production", "prod-db", "value")
        set_secret(s, app, "TOKEN", "production", "vault read x", "command")
        set_secret(s, app, "ONLY_STAGING", "staging", "st-only", "value")
        s.commit()
        assert secret_values(s, app, None) == {"DB": "shared-db"}
        assert secret_values(s, app, "staging") == {"DB": "shared-db", "ONLY_STAGING": "st-only"}
        # a command's value exists once a deployment ran it
        assert secret_values(s, app, "production") == {"DB": "prod-db"}
        assert secret_commands(s, app, "production", ["DB", "TOKEN"]) == {"TOKEN": "vault read x"}
        assert secret_commands(s, app, "staging", ["DB", "TOKEN"]) == {}
        store_resolved(s, app, "production", {"TOKEN": "tok-1"})
        s.commit()
        assert secret_values(s, app, "production") == {"DB": "prod-db", "TOKEN": "tok-1"}
        assert [(x.name, x.environment, x.kind) for x in list_secrets(app)] == [
            ("DB", None, "value"),
            ("DB", "production", "value"),
            ("ONLY_STAGING", "staging", "value"),
            ("TOKEN", "production", "command"),
        ]
        assert delete_secret(s, app, "DB", "production")
        assert not delete_secret(s, app, "DB", "production")
        assert delete_secret(s, app, "TOKEN", "production")  # its output goes with it
        s.commit()
        assert secret_values(s, app, "production") == {"DB": "shared-db"}
        stored = s.execute(text("SELECT value FROM secrets")).scalars().all()
        resolved = s.execute(text("SELECT count(*) FROM resolved_secrets")).scalar_one()
    assert resolved == 0
    assert all(v.startswith("gAAAA") for v in stored)  # Fernet tokens, not values
    assert b"shared-db" not in (tmp_path / "c.db").read_bytes()


def test_plain_values_of_an_older_server_are_sealed_at_the_first_start(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007")
        conn.execute(
            text(
                "INSERT INTO apps (id, name, repo_url, branch, webhook_secret, public_status, "
                "created_at) VALUES (1, 'shop', 'r', 'main', 'w', false, '2026-12-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO secrets (app_id, name, value, updated_at) "
                f"VALUES (1, 'DATABASE_URL', '{PLAIN}', '2026-12-01')"
            )
        )
    migrate(engine)
    sessions = session_factory(engine)
    open_secret_store(tmp_path, sessions)
    with sessions() as s:
        app = s.get_one(App, 1)
        assert secret_values(s, app, "production") == {"DATABASE_URL": PLAIN}
        raw = s.execute(text("SELECT value, sealed, environment FROM secrets")).one()
    assert raw.value != PLAIN and raw.sealed and raw.environment == ""
    engine.dispose()
    with engine.connect() as conn:  # checkpoint the WAL: no page of it keeps the old value
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        conn.execute(text("VACUUM"))
    assert PLAIN.encode() not in (tmp_path / "c.db").read_bytes()


def test_a_missing_or_wrong_key_file_is_refused_naming_the_file_and_no_value(
    tmp_path: Path,
) -> None:
    sessions, _ = _store(tmp_path)
    with sessions() as s:
        set_secret(s, _app(s), "DB", None, "Vx1-secret-db-value", "value")
        s.commit()
    key = tmp_path / KEY_FILE
    original = key.read_bytes()
    key.unlink()
    with pytest.raises(SecretStoreError, match=r"secrets.key is missing.*1 sealed secret"):
        open_secret_store(tmp_path, session_factory(_engine(tmp_path)))
    create_key_file(key)  # another key
    with pytest.raises(SecretStoreError, match="does not open the 1 secret") as wrong:
        open_secret_store(tmp_path, session_factory(_engine(tmp_path)))
    assert "Vx1" not in str(wrong.value)
    key.write_bytes(b"not a key\n")
    with pytest.raises(KeyFileError, match="line 1: not a Fernet key"):
        open_secret_store(tmp_path, session_factory(_engine(tmp_path)))
    key.write_bytes(original)
    key.chmod(0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        open_secret_store(tmp_path, session_factory(_engine(tmp_path)))
    key.chmod(0o600)
    open_secret_store(tmp_path, session_factory(_engine(tmp_path)))


def test_rotation_reseals_every_value_and_keeps_only_the_new_key(tmp_path: Path) -> None:
    sessions, sealer = _store(tmp_path)
    key = tmp_path / KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    old = read_keys(key)
    with sessions() as s:
        app = _app(s)
        set_secret(s, app, "DB", None, "db-value", "value")
        store_resolved(s, app, "production", {"TOKEN": "tok-value"})
        s.commit()
    assert rotate(sealer, sessions) == 2
    new = read_keys(key)
    assert len(new) == 1 and new != old
    assert key.stat().st_mode & 0o777 == 0o600
    # a server started on the rotated key file opens everything; the old key opens nothing
    fresh = session_factory(_engine(tmp_path))
    open_secret_store(tmp_path, fresh)
    with fresh() as s:
        assert secret_values(s, s.get_one(App, 1), None) == {"DB": "db-value"}
    key.write_bytes(b"".join(k + b"\n" for k in old))
    with pytest.raises(SecretStoreError, match="does not open"):
        open_secret_store(tmp_path, session_factory(_engine(tmp_path)))
