"""The staging-first gate of migrations, by content hash: what the hash covers, and when
an expand or a contract is refused for not having succeeded before."""

from __future__ import annotations

import pytest

from conveyor.config import Config, parse_config
from conveyor.deploy.migrationgate import Phase, command_files, migration_hash, refusal
from conveyor.sqllint.sources import sources_digest

ORDER = ["dev", "staging", "production"]
H = "ab" * 32


def config(migrations: str) -> Config:
    return parse_config("app: shop\n" + migrations)


EXPAND = "migrations:\n  expand: ./bin/migrate-expand\n"
SQL = "migrations:\n  expand: ./bin/migrate-expand\n  sql: [m/*.sql]\n"


def digest(text: str, *, sql: str | None = None, artifact: str = "a1", script: str = "f1") -> str:
    found: dict[str, str | None] = {"./bin/migrate-expand": script}
    out = migration_hash(config(text), sql=sql, files=found, artifact=artifact)
    assert out is not None
    return out


@pytest.mark.parametrize(
    ("phase", "env", "done", "refused_for"),
    [
        ("expand", "dev", set(), None),  # the first environment has none before it
        ("expand", "staging", {("dev", "expand")}, None),
        ("expand", "production", {("dev", "expand"), ("staging", "expand")}, None),
        ("expand", "production", {("dev", "expand")}, "staging"),
        ("expand", "production", set(), "dev"),  # the first one missing is named
        # a contract succeeding before does not stand for the expand, nor the reverse
        ("expand", "production", {("dev", "contract"), ("staging", "contract")}, "dev"),
        ("contract", "production", {("dev", "expand"), ("staging", "expand")}, "dev"),
        ("contract", "production", {("dev", "contract"), ("staging", "contract")}, None),
        ("contract", "staging", {("dev", "contract")}, None),
        ("contract", "staging", set(), "dev"),
        ("expand", "qa", set(), None),  # not in the release's chain: the artifact gate's
    ],
)
def test_a_migration_runs_only_after_the_same_one_succeeded_in_every_environment_before(
    phase: Phase, env: str, done: set[tuple[str, Phase]], refused_for: str | None
) -> None:
    why = refusal(phase, "3f2a1c9-1", H, env, ORDER, done)
    if refused_for is None:
        assert why is None
        return
    assert why is not None
    assert f"the {phase} migration of release 3f2a1c9-1 (migration {H[:12]})" in why
    assert f"has not succeeded on {refused_for}" in why
    assert "dev → staging → production" in why
    if phase == "expand":
        assert why.endswith(f"Deploy release 3f2a1c9-1 to {refused_for} first")
    else:
        assert why.endswith(f"It runs once the same contract has succeeded on {refused_for}")


def test_a_release_without_a_recorded_hash_is_left_to_the_artifact_gate() -> None:
    # no migrations, or built before hashes were recorded
    assert refusal("expand", "r", None, "production", ORDER, set()) is None


def test_no_migration_no_hash() -> None:
    plain = config("")
    assert migration_hash(plain, sql=None, files={}, artifact="a1") is None
    only_sql = config("migrations:\n  sql: [m/*.sql]\n")
    assert migration_hash(only_sql, sql="s", files={}, artifact="a1") is None
    contract = config("migrations:\n  contract: ./bin/c\n")
    assert migration_hash(contract, sql=None, files={}, artifact="a1") is not None


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        # without migrations.sql the whole artifact stands for what the commands read
        ((EXPAND, {}), (EXPAND, {}), True),
        ((EXPAND, {}), (EXPAND, {"artifact": "a2"}), False),
        ((EXPAND, {}), (EXPAND, {"script": "f2"}), False),
        ((EXPAND, {}), (EXPAND.replace("expand\n", "expand --all\n"), {}), False),
        ((EXPAND, {}), (EXPAND + "  lock_timeout: 2s\n", {}), False),
        ((EXPAND, {}), (EXPAND + "  statement_timeout: 5m\n", {}), False),
        ((EXPAND, {}), (EXPAND + "  contract: ./bin/c\n", {}), False),
        ((EXPAND + "  contract: ./bin/c\n", {}), (EXPAND + "  contract: ./bin/d\n", {}), False),
        (
            (EXPAND + "  contract: ./bin/c\n", {}),
            (EXPAND + "  contract: ./bin/c\n  backup: b\n", {}),
            False,
        ),
        # hooks.migrate is the older name of the same expand
        ((EXPAND, {}), ("hooks:\n  migrate: ./bin/migrate-expand\n", {}), True),
        # with it: the SQL printed, the commands and their files; the rest of the artifact not
        ((SQL, {"sql": "s1"}), (SQL, {"sql": "s1", "artifact": "a2"}), True),
        ((SQL, {"sql": "s1"}), (SQL, {"sql": "s2"}), False),
        ((SQL, {"sql": "s1"}), (SQL, {"sql": "s1", "script": "f2"}), False),
        # the lint left no digest: the artifact again
        ((SQL, {}), (SQL, {"artifact": "a2"}), False),
    ],
)
def test_what_the_migration_hash_covers(
    a: tuple[str, dict[str, str]], b: tuple[str, dict[str, str]], same: bool
) -> None:
    assert (digest(a[0], **a[1]) == digest(b[0], **b[1])) is same


def test_the_files_of_the_commands_are_their_first_words_when_relative_paths() -> None:
    c = config(
        "migrations:\n  expand: ./bin/migrate-expand --now\n  contract: alembic upgrade head\n"
        "  backup: bin/backup.sh /var/backups\n"
    )
    assert command_files(c) == ["./bin/migrate-expand", "bin/backup.sh"]
    assert command_files(config("migrations:\n  expand: /usr/bin/x && ./y\n")) == []


def test_the_sql_digest_is_of_names_and_texts_in_order() -> None:
    one = sources_digest([("a.sql", "ALTER TABLE t ADD c int;"), ("b.sql", "")])
    assert one == sources_digest([("a.sql", "ALTER TABLE t ADD c int;"), ("b.sql", "")])
    assert one != sources_digest([("b.sql", ""), ("a.sql", "ALTER TABLE t ADD c int;")])
    assert one != sources_digest([("a.sql", "ALTER TABLE t ADD c int;b.sql")])
