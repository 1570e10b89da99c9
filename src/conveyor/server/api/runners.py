"""The routes a `conveyor runner` calls (runner role): claim a run, fetch its source,
report its steps, upload its artifact (protocol/runners.py, pipeline/handoff.py)."""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.background import BackgroundTask

from conveyor.pipeline import git, handoff
from conveyor.pipeline.dispatching import RunnerDispatch
from conveyor.pipeline.records import RunContext
from conveyor.protocol.runners import (
    ARTIFACT_HEADER,
    CLAIM_HEADER,
    ArtifactAccepted,
    ArtifactFacts,
    RunEnd,
    RunnerClaim,
    RunnerJob,
    RunnerOut,
    StepEnd,
    parse_claim,
)
from conveyor.releases.artifact import BuiltArtifact
from conveyor.server.auth import RunnerCaller, Viewer
from conveyor.server.deps import RecordId, SessionDep
from conveyor.server.edge import responses
from conveyor.store.models import Run, Runner, Step, utcnow
from conveyor.threads import in_thread

router = APIRouter(prefix="/api", tags=["runners"])
CLAIM_POLL = 1.0  # seconds between two looks for a run while a claim waits (at most)
MAX_LOG_POST = 1 << 20


def _claim(
    claim: Annotated[
        str,
        Header(
            alias=CLAIM_HEADER,
            max_length=120,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[0-9]{1,9}$",
            description="runner/attempt: the claim this request is made under",
        ),
    ],
) -> tuple[str, int]:
    found = parse_claim(claim)
    if found is None:  # the pattern lets none through
        raise HTTPException(422, f"malformed {CLAIM_HEADER} header (runner/attempt)")
    return found


Claimed = Annotated[tuple[str, int], Depends(_claim)]


def _engine(request: Request) -> RunnerDispatch:
    engine: RunnerDispatch = request.app.state.engine
    return engine


def _lost(what: str, claim: tuple[str, int]) -> HTTPException:
    runner, attempt = claim
    return HTTPException(
        409,
        f"{what} is no longer runner {runner}'s at attempt {attempt} (it ended, was aborted "
        "or was retried after the runner stopped answering): stop working on it",
    )


async def _refused(
    request: Request, model: type[Run] | type[Step], record_id: int, claim: tuple[str, int]
) -> HTTPException:
    """Why a claim's request is refused: 404 for a run or step that does not exist, 409
    for one that is no longer this runner's."""
    engine = _engine(request)
    what = f"{'run' if model is Run else 'step'} {record_id}"

    def exists() -> bool:
        with engine.sessions() as session:
            return session.get(model, record_id) is not None

    if not await in_thread(exists):
        return HTTPException(404, f"no {what}")
    return _lost(what, claim)


@router.post(
    "/runner/claim",
    response_model=RunnerJob,
    responses={204: {"description": "no run for this runner yet"}},
)
async def claim_run(body: RunnerClaim, request: Request, caller: RunnerCaller) -> Any:
    """Wait up to `wait` seconds for a handed-off run this runner's labels fit; take it."""
    engine = _engine(request)
    labels = sorted(set(body.labels))

    def seen() -> None:
        with engine.sessions() as session:
            handoff.seen(session, body.name, labels, caller.token_id)

    def take() -> RunnerJob | None:
        with engine.sessions() as session:
            run = handoff.claim(session, body.name, labels)
            return None if run is None else engine.job_in(session, run)

    await in_thread(seen)
    deadline = time.monotonic() + body.wait
    while True:
        job = await in_thread(take)
        if job is not None:
            return job
        if time.monotonic() >= deadline or await request.is_disconnected():
            return Response(status_code=204)
        await engine.next_handoff(min(CLAIM_POLL, max(deadline - time.monotonic(), 0)))


@router.get("/runners")
def list_runners(_: Viewer, session: SessionDep) -> list[RunnerOut]:
    """The runners seen, with their labels; `live`: seen in the last RUNNER_LIVE seconds."""
    since = utcnow() - timedelta(seconds=handoff.RUNNER_LIVE)
    return [
        RunnerOut(
            name=r.name,
            labels=handoff.parse_labels(r.labels),
            last_seen=r.last_seen,
            live=r.last_seen >= since,
        )
        for r in session.scalars(select(Runner).order_by(Runner.name)).all()
    ]


async def _held(request: Request, run_id: int, claim: tuple[str, int]) -> Run:
    engine = _engine(request)

    def read() -> Run | None:
        with engine.sessions() as session:
            run = handoff.held(session, run_id, *claim)
            if run is not None:
                session.expunge(run)
            return run

    run = await in_thread(read)
    if run is None:
        raise await _refused(request, Run, run_id, claim)
    return run


async def _step(request: Request, step_id: int, claim: tuple[str, int]) -> None:
    engine = _engine(request)

    def read() -> bool:
        with engine.sessions() as session:
            return handoff.step_of(session, step_id, *claim) is not None

    if not await in_thread(read):
        raise await _refused(request, Step, step_id, claim)


@router.post("/runner/runs/{run_id}/heartbeat", status_code=204, responses=responses(404, 409))
async def heartbeat(run_id: RecordId, request: Request, _: RunnerCaller, claim: Claimed) -> None:
    """Keep the run this runner's; 409 once it is not (aborted, retried elsewhere)."""
    engine = _engine(request)

    def beat() -> bool:
        with engine.sessions() as session:
            return handoff.heartbeat(session, run_id, *claim)

    if not await in_thread(beat):
        raise await _refused(request, Run, run_id, claim)


@router.get("/runner/runs/{run_id}/source", responses=responses(404, 409))
async def source(run_id: RecordId, request: Request, _: RunnerCaller, claim: Claimed) -> Any:
    """The run's commit as a .tar.gz (`git archive` of the server's mirror of the app)."""
    await _held(request, run_id, claim)
    engine = _engine(request)
    ctx, sha = await in_thread(_source, engine, run_id)
    mirror = engine.paths.mirror(ctx.app)
    out = engine.paths.artifacts / "tmp" / f"source-{run_id}-{secrets.token_hex(4)}.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        await git.git("archive", "--format=tar.gz", "-o", str(out), sha, cwd=mirror)
    except (git.GitError, OSError):  # this server's mirror lacks it: fetch, once
        await git.update_mirror(mirror, ctx.repo_url)
        await git.git("archive", "--format=tar.gz", "-o", str(out), sha, cwd=mirror)
    return FileResponse(
        out, media_type="application/gzip", background=BackgroundTask(out.unlink, missing_ok=True)
    )


def _source(engine: RunnerDispatch, run_id: int) -> tuple[RunContext, str]:
    with engine.sessions() as session:
        run = session.get_one(Run, run_id)
        return engine.context_in(session, run_id), handoff.source_sha(session, run)


@router.post("/runner/steps/{step_id}/start", status_code=204, responses=responses(404, 409))
async def step_start(step_id: RecordId, request: Request, _: RunnerCaller, claim: Claimed) -> None:
    await _step(request, step_id, claim)
    await _engine(request).step_started(step_id, claim[0])


@router.post("/runner/steps/{step_id}/log", status_code=204, responses=responses(404, 409, 413))
async def step_log(step_id: RecordId, request: Request, _: RunnerCaller, claim: Claimed) -> None:
    """Append masked text (the body, UTF-8) to the step's log."""
    body = await request.body()
    if len(body) > MAX_LOG_POST:
        raise HTTPException(413, f"a log post holds at most {MAX_LOG_POST} bytes")
    await _step(request, step_id, claim)
    await _engine(request).step_log(step_id, body.decode("utf-8", errors="replace"))


@router.post("/runner/steps/{step_id}/end", status_code=204, responses=responses(404, 409))
async def step_end(
    step_id: RecordId, body: StepEnd, request: Request, _: RunnerCaller, claim: Claimed
) -> None:
    await _step(request, step_id, claim)
    await _engine(request).step_ended(step_id, body)


@router.post("/runner/runs/{run_id}/end", status_code=204, responses=responses(404, 409))
async def run_end(
    run_id: RecordId, body: RunEnd, request: Request, _: RunnerCaller, claim: Claimed
) -> None:
    """End a run whose steps did not all succeed, or a pull request's (no artifact)."""
    await _held(request, run_id, claim)
    await _engine(request).run_ended(run_id, body)


@router.put("/runner/runs/{run_id}/artifact", status_code=201, responses=responses(404, 409, 422))
async def upload_artifact(
    run_id: RecordId, request: Request, caller: RunnerCaller, claim: Claimed
) -> ArtifactAccepted:
    """The run's artifact (the body); its sha256 is computed again here and must match the
    runner's (ARTIFACT_HEADER), or the upload is refused and the run fails with the reason."""
    try:
        facts = ArtifactFacts.model_validate_json(request.headers.get(ARTIFACT_HEADER, ""))
    except ValidationError as exc:
        raise HTTPException(400, f"{ARTIFACT_HEADER} header: {exc.errors()[0]['msg']}") from None
    run = await _held(request, run_id, claim)
    step_id = handoff.plan_of(run).get("artifact_step")
    if step_id is None:
        raise HTTPException(409, f"run {run_id} builds no artifact (a pull request's run)")
    engine = _engine(request)
    await engine.step_started(step_id, claim[0])
    tmp = engine.paths.artifacts / "tmp" / f"upload-{run_id}-{secrets.token_hex(4)}.tar.gz"
    actual, size = await _receive(request, tmp)
    if actual != facts.sha256 or size != facts.size:
        tmp.unlink(missing_ok=True)
        reason = (
            f"artifact upload refused: the server received {size} bytes with sha256 {actual}, "
            f"runner {claim[0]} built {facts.size} bytes with sha256 {facts.sha256} "
            "(corrupted on the way?); run it again"
        )
        await engine.artifact_refused(run_id, step_id, reason)
        raise HTTPException(422, reason)
    await in_thread(engine.store.put, tmp, actual)
    built = BuiltArtifact(engine.store.path_for(actual), actual, size, facts.files)
    release = await engine.artifact_accepted(run_id, step_id, built, facts)
    return ArtifactAccepted(release=release)


async def _receive(request: Request, path: Path) -> tuple[str, int]:
    """Write the request's body to `path`: its sha256 and size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with open(path, "wb") as fh:
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
            fh.write(chunk)
    return digest.hexdigest(), size


__all__ = ["router"]
