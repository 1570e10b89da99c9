from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from conveyor.agent import procfs
from conveyor.agent.records import STATE_FILE, AgentState, ReleaseRecord, StateFile


def test_update_writes_atomically_and_keeps_unknown_sections(data: Path) -> None:
    path = data / STATE_FILE
    path.write_text(json.dumps({"version": 1, "loop": {"generation": 7}, "instances": []}))
    StateFile(data).update(
        lambda s: s.releases.setdefault("shop", {}).__setitem__(
            "r1", ReleaseRecord(installed_at=1.0, sha256="a" * 64)
        )
    )
    saved = json.loads(path.read_text())
    assert saved["loop"] == {"generation": 7}
    assert saved["releases"]["shop"]["r1"]["sha256"] == "a" * 64
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in data.iterdir()) == [f".{STATE_FILE}.lock", STATE_FILE]


def test_concurrent_updates_lose_nothing(data: Path) -> None:
    state = StateFile(data)

    def add(n: int) -> None:
        for i in range(20):

            def change(s: AgentState, key: str = f"t{n}-{i}", when: float = float(i)) -> None:
                s.releases.setdefault("x", {})[key] = ReleaseRecord(
                    installed_at=when, sha256="b" * 64
                )

            state.update(change)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(state.load().releases["x"]) == 80


def test_a_corrupt_record_is_set_aside(data: Path, caplog: pytest.LogCaptureFixture) -> None:
    (data / STATE_FILE).write_text('{"instances": [{"app": ')
    assert StateFile(data).load() == AgentState()
    aside = [p.name for p in data.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    assert "agent record is unreadable" in caplog.text


def test_proc_stat_of_a_live_process(tmp_path: Path) -> None:
    # a process name with spaces and parentheses must not shift the fields
    odd = tmp_path / "a b) (c"
    odd.symlink_to(shutil.which("sleep") or "/bin/sleep")
    proc = subprocess.Popen([str(odd), "30"], start_new_session=True)
    try:
        stat = procfs.read_stat(proc.pid)
        assert stat is not None
        assert "a b) (c" in Path(f"/proc/{proc.pid}/stat").read_text()
        assert (stat.pid, stat.pgrp, stat.session, stat.ppid) == (
            proc.pid,
            proc.pid,
            proc.pid,
            os.getpid(),
        )
        assert procfs.is_running(proc.pid, stat.start_ticks)
        assert not procfs.is_running(proc.pid, stat.start_ticks + 1)
        assert [m.pid for m in procfs.group_members(proc.pid)] == [proc.pid]
        proc.kill()
        proc.wait()
        assert procfs.read_stat(proc.pid) is None
        assert not procfs.is_running(proc.pid)
    finally:
        proc.kill()
        proc.wait()
