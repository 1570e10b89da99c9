"""Runs: start one, list them, read one with its steps and logs, abort."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from conveyor.pipeline import handoff
from conveyor.pipeline.runs import ACTIVE, enqueue_run
from conveyor.protocol import MAX_INT, LogChunk, RunCreate, RunOut
from conveyor.server.api.deployments import abort, run_deployments
from conveyor.server.auth import Deployer, Viewer
from conveyor.server.deps import (
    AppFilter,
    AppName,
    RecordId,
    SessionDep,
    get_app_or_404,
    get_run_or_404,
)
from conveyor.server.edge import ErrorOut, responses
from conveyor.server.fastpath import CachedRead, app_name, at_most
from conveyor.server.idempotency import IdempotencyKey, Once, answer_once
from conveyor.server.recent import NOT_MODIFIED, Recent
from conveyor.server.views import run_out
from conveyor.store.locking import lock_for_writing
from conveyor.store.models import Run, Step, utcnow

router = APIRouter(prefix="/api", tags=["runs"])
MAX_LOG_CHUNK = 1 << 20


@router.post(
    "/apps/{name}/runs",
    status_code=201,
    responses={
        **responses(404),
        409: {
            "model": ErrorOut,
            "description": "other requests changed the same records; try again",
        },
    },
)
def start_run(
    name: AppName,
    body: RunCreate,
    request: Request,
    caller: Deployer,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> RunOut:
    """Queue a run for a commit (default: the head of the app's branch, read at checkout)."""
    once = Once(request, caller, idempotency_key, body)
    once.recall(session)
    app = get_app_or_404(session, name)
    sha = (body.sha or "").lower()

    def act() -> RunOut:
        run = enqueue_run(
            session,
            app,
            sha,
            ref=None if sha else f"refs/heads/{app.branch}",
            trigger="manual",
            triggered_by=caller.name,
        )
        return run_out(run, steps=True)

    answer = answer_once(session, once, app.id, act, status=201)
    request.app.state.engine.wake()
    return answer


DEFAULT_LISTED, MAX_LISTED = 50, 1000
# what a listing reads (a run's steps are not listed; its pull request is)
_recent = Recent(("runs", "apps", "pull_request_runs"))
_listing = TypeAdapter(list[RunOut])


def _key(app: str | None, limit: int | str) -> str:
    return f"{app or ''}\0{limit}"


# what the fast path (fastpath.py) may answer from `_recent` before FastAPI: the same key
cached = CachedRead(
    "/api/runs",
    _recent,
    lambda q: _key(q.get("app"), q.get("limit", DEFAULT_LISTED)),
    {"app": app_name, "limit": at_most(MAX_LISTED)},
)


@router.get("/runs", response_model=list[RunOut], responses={**responses(404), **NOT_MODIFIED})
async def list_runs(
    _: Viewer,
    request: Request,
    app: AppFilter = None,
    limit: int = Query(DEFAULT_LISTED, ge=1, le=MAX_LISTED),
) -> Response:
    """The newest runs, of every app or of one (answered from memory while none changed)."""

    def read() -> bytes:
        with request.app.state.sessions() as session:
            return _listing.dump_json(runs(session, app or None, limit))

    return await _recent.answer(_key(app, limit), read, request.headers.get("if-none-match"))


def runs(session: Session, app: str | None, limit: int) -> list[RunOut]:
    query = (
        select(Run)
        .options(joinedload(Run.app), joinedload(Run.pull_request))
        .order_by(Run.id.desc())
        .limit(limit)
    )
    if app is not None:
        query = query.where(Run.app_id == get_app_or_404(session, app).id)
    return [run_out(r) for r in session.scalars(query).all()]


@router.get("/runs/{run_id}", responses=responses(404))
def get_run(run_id: RecordId, _: Viewer, session: SessionDep) -> RunOut:
    return run_out(get_run_or_404(session, run_id), steps=True)


@router.post("/runs/{run_id}/abort", responses=responses(404, 409))
def abort_run(run_id: RecordId, request: Request, caller: Deployer, session: SessionDep) -> RunOut:
    """Stop a run: its running step is killed, or its deployments roll back what they changed."""
    run = get_run_or_404(session, run_id)
    lock_for_writing(session, run.app_id)  # the deployments' states as the engine left them
    aborted = [d for d in run_deployments(session, run_id) if abort(d, caller)]
    if aborted:
        session.commit()
        request.app.state.deployer.wake()
    if run.state not in ACTIVE:
        if not aborted:
            raise HTTPException(
                409, f"run {run_id} already ended ({run.state}), nothing deploys it"
            )
    elif run.state == "queued":
        run.state = "cancelled"
        run.reason = f"aborted by {caller.name} before it started"
        run.finished_at = utcnow()
        session.commit()
    elif run.handoff is not None:  # a runner's: it stops at its next report
        handoff.cancel(session, run, f"aborted by {caller.name}")
        engine = request.app.state.engine
        if engine.on_end is not None:
            engine.on_end(session, run)
        session.commit()
    else:
        request.app.state.engine.cancel(run_id)
    return run_out(run, steps=True)


@router.get("/runs/{run_id}/logs", responses=responses(404))
def run_logs(run_id: RecordId, request: Request, _: Viewer, session: SessionDep) -> list[LogChunk]:
    run = get_run_or_404(session, run_id)
    return [_chunk(request, step, 0) for step in run.steps]


@router.get("/steps/{step_id}/log", responses=responses(404))
def step_log(
    step_id: RecordId,
    request: Request,
    _: Viewer,
    session: SessionDep,
    offset: int = Query(0, ge=0, le=MAX_INT),
) -> LogChunk:
    step = session.get(Step, step_id)
    if step is None:
        raise HTTPException(404, f"unknown step {step_id}")
    return _chunk(request, step, offset)


def log_file(request: Request, step: Step) -> Path | None:
    """Where a step's log is (already masked: secrets are replaced as it is written)."""
    if not step.log_path:
        return None
    return Path(request.app.state.settings.data_dir) / step.log_path


def read_log(request: Request, step: Step, offset: int, limit: int) -> bytes:
    """Up to `limit` bytes of a step's log from `offset`; nothing if it has none yet."""
    path = log_file(request, step)
    if path is None:
        return b""
    try:
        with open(path, "rb") as fh:
            if offset >= os.fstat(fh.fileno()).st_size:
                return b""  # nothing there yet (and no seek past what the file system allows)
            fh.seek(offset)
            return fh.read(limit)
    except FileNotFoundError:
        return b""


def _chunk(request: Request, step: Step, offset: int) -> LogChunk:
    complete = step.state not in ("pending", "running")
    data = read_log(request, step, offset, MAX_LOG_CHUNK)
    # never split a UTF-8 character between two chunks
    cut = len(data)
    if len(data) == MAX_LOG_CHUNK:
        complete = False
        while cut > 0 and (data[cut - 1] & 0xC0) == 0x80:
            cut -= 1
        if cut > 0 and data[cut - 1] >= 0xC0:
            cut -= 1
    return LogChunk(
        step=step.id,
        offset=offset,
        next_offset=offset + cut,
        text=data[:cut].decode("utf-8", errors="replace"),
        complete=complete,
    )


__all__ = ["cached", "log_file", "read_log", "router"]
