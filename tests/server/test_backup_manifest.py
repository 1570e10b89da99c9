"""Which backups this conveyor restores: any schema revision it knows, no newer one."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.server.backup import FORMAT, BackupError, Manifest, check_restorable, known_revisions


def _manifest(revision: str, fmt: int = FORMAT) -> Manifest:
    return Manifest(fmt, "0.1.0", revision, "sqlite", "2026-12-06T00:00:00+00:00", 3)


def test_the_known_revisions_run_from_the_first_to_the_newest() -> None:
    known = known_revisions()
    assert known[0] == "0001" and "0008" in known
    assert known == sorted(known)


@pytest.mark.parametrize("revision", ["0001", "0007", known_revisions()[-1]])
def test_a_backup_of_a_known_revision_is_restorable(revision: str) -> None:
    check_restorable(_manifest(revision), Path("b.tar"))  # older ones migrate at start


@pytest.mark.parametrize(
    ("manifest", "named"),
    [
        (_manifest("9999"), "schema revision 9999, backup format 1"),
        (_manifest("0008", fmt=FORMAT + 1), f"backup format {FORMAT + 1}"),
    ],
)
def test_a_newer_backup_is_refused_naming_both_versions(manifest: Manifest, named: str) -> None:
    with pytest.raises(BackupError) as refused:
        check_restorable(manifest, Path("b.tar"))
    assert named in str(refused.value)
    assert f"knows schema revisions up to {known_revisions()[-1]}" in str(refused.value)
