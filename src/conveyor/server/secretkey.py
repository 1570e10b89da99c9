"""The server's key file, `<data>/secrets.key`: made at first start, checked at every start.

The key seals the secret store in the database (conveyor.store.secrets). Lose it and
the secrets are lost with it: a backup (`conveyor backup`) holds it beside the
database. `conveyor secret rotate-key` asks the running server to seal everything
again with a new key (`rotate`).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from conveyor.sealing import KeyFileError, Sealer, create_key_file
from conveyor.store.models import Secret
from conveyor.store.secrets import SecretStoreError, open_store, reseal_all

log = logging.getLogger("conveyor.server")

KEY_FILE = "secrets.key"

_rotating = threading.Lock()


def open_secret_store(data_dir: Path, *factories: sessionmaker[Session]) -> Sealer:
    """The sealer of this server, given to each session factory; seals plain old values.

    Raises SecretStoreError or KeyFileError with a message that names the file and
    what to do, and no value.
    """
    path = data_dir / KEY_FILE
    sessions = factories[0]
    if not path.exists():
        with sessions() as session:
            sealed = session.scalar(
                select(func.count()).select_from(Secret).where(Secret.sealed.is_(True))
            )
        if sealed:
            raise SecretStoreError(
                f"the key file {path} is missing, and the database holds {sealed} sealed "
                "secret(s) that only it opens: put it back from your backup "
                "(`conveyor restore` brings the key with the database)"
            )
        if create_key_file(path):
            log.info("secret key file created", extra={"path": str(path)})
    sealer = Sealer(path)
    for factory in factories:
        factory.configure(info={"sealer": sealer})
    with sessions() as session:
        sealed_now = open_store(session)
    if sealed_now:
        log.info("plain-text secrets of an older conveyor sealed", extra={"count": sealed_now})
    return sealer


def rotate(sealer: Sealer, sessions: sessionmaker[Session]) -> int:
    """Seal every value with a new key, then forget the old one. Returns the values resealed.

    The new key is written first (beside the old one, which still opens everything),
    then every value is sealed again in one transaction, twice (the second pass
    catches a value another request sealed with the old key meanwhile), and only
    then is the old key dropped from the file. A crash in between leaves a key file
    that opens every value.
    """
    with _rotating:
        old = sealer.keys
        sealer.use([Sealer.new_key(), *old])
        count = 0
        for _ in range(2):
            with sessions() as session:
                count = reseal_all(session)
                session.commit()
        sealer.use(sealer.keys[:1])
    log.info("secret key rotated", extra={"values": count})
    return count


__all__ = ["KEY_FILE", "KeyFileError", "SecretStoreError", "open_secret_store", "rotate"]
