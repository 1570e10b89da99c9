"""The agent's state file keeps each instance's env sealed with the agent's own key file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conveyor.agent.records import KEY_FILE, STATE_FILE, InstanceRecord, StateFile

SECRET = "Qp2-database-password"


def _instance(env: dict[str, str]) -> InstanceRecord:
    return InstanceRecord(
        id="i1",
        app="shop",
        release="r1",
        release_dir="/x",
        command="python3 app.py",
        port=8000,
        pid=1,
        pgid=1,
        proc_start=1,
        started_at=1.0,
        first_started_at=1.0,
        state="running",
        log_path="/x/log",
        env=env,
    )


def test_env_is_sealed_in_the_file_and_opened_on_load(tmp_path: Path) -> None:
    StateFile(tmp_path).update(lambda s: s.instances.append(_instance({"DB": SECRET})))
    raw = (tmp_path / STATE_FILE).read_bytes()
    assert SECRET.encode() not in raw
    assert "env" not in json.loads(raw)["instances"][0]
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    # a new agent process (a new StateFile) opens it with the key file
    assert StateFile(tmp_path).load().instances[0].env == {"DB": SECRET}


def test_a_plain_env_of_an_older_agent_is_read_then_sealed(tmp_path: Path) -> None:
    record = {"version": 1, "instances": [_instance({"DB": SECRET}).model_dump()]}
    (tmp_path / STATE_FILE).write_text(json.dumps(record))
    state = StateFile(tmp_path)
    assert state.load().instances[0].env == {"DB": SECRET}
    state.update(lambda s: None)
    assert SECRET.encode() not in (tmp_path / STATE_FILE).read_bytes()


def test_a_wrong_key_file_loses_the_env_not_the_record_and_logs_no_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    StateFile(tmp_path).update(lambda s: s.instances.append(_instance({"DB": SECRET})))
    other = tmp_path / "other"
    other.mkdir()
    (other / STATE_FILE).write_bytes((tmp_path / STATE_FILE).read_bytes())
    StateFile(other).update(lambda s: None)  # makes other/agent.key: a different key
    (other / STATE_FILE).write_bytes((tmp_path / STATE_FILE).read_bytes())
    loaded = StateFile(other).load()
    assert [i.id for i in loaded.instances] == ["i1"]
    assert loaded.instances[0].env == {}
    assert "cannot be opened with the agent's key file" in caplog.text
    assert SECRET not in caplog.text
