"""The Run page: the commit, each step with its state, its log live as it is written; abort.

What it shows comes from the API's own functions (`get_run`, `abort_run`, the step log
files), so the page and `conveyor logs` can never disagree.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from conveyor.deploy.records import ACTIVE as DEPLOYING
from conveyor.pipeline.runs import ACTIVE
from conveyor.protocol import MAX_INT, DeploymentOut, RunOut
from conveyor.server.api.deployments import deployment_out
from conveyor.server.api.runs import abort_run, get_run
from conveyor.server.deps import RecordId
from conveyor.server.web import live, logs
from conveyor.server.web.answers import refused
from conveyor.server.web.render import fragment, page
from conveyor.server.web.session import PageViewer, WebCaller, action_caller, api_role
from conveyor.store.models import Deployment, Run, Step

router = APIRouter(include_in_schema=False)
ABORT = "/api/runs/{run_id}/abort"

_SHA = re.compile(r"^[0-9a-f]{7,64}$")
_SCP = re.compile(r"^[\w.-]+@(?P<host>[\w.-]+):(?P<path>[^/].*)$")  # git@github.com:acme/shop
_FORGE_PATH = re.compile(r"^(/[^/]+){2,}$")  # owner/repo, or GitLab's group/subgroup/repo


def commit_url(repo: str, sha: str) -> str | None:
    """The web page of a commit on the forge that hosts `repo`, or None.

    For an http(s) clone URL (credentials in it are dropped), and for git's ssh forms,
    whose host serves the web pages over https: GitHub, Gitea and Forgejo show a commit
    at `/OWNER/REPO/commit/SHA`, GitLab at `…/-/commit/SHA`, Bitbucket at `…/commits/SHA`.
    A local path or any other URL has no page.
    """
    sha = sha.lower()
    if not _SHA.match(sha):
        return None
    repo = repo.strip()
    scp = _SCP.match(repo)
    try:
        if scp is not None:
            scheme, host, path = "https", scp["host"], "/" + scp["path"]
        else:
            parts = urlsplit(repo)
            if parts.scheme not in ("http", "https", "ssh") or not parts.hostname:
                return None
            host = parts.hostname
            if ":" in host:
                host = f"[{host}]"
            if parts.port and parts.scheme != "ssh":  # an ssh port is not the web's
                host += f":{parts.port}"
            scheme = "https" if parts.scheme == "ssh" else parts.scheme
            path = parts.path
    except ValueError:  # a port that is not a number
        return None
    path = path.rstrip("/").removesuffix(".git")
    if not _FORGE_PATH.match(path):
        return None
    name = host.lower()
    where = "/-/commit/" if "gitlab" in name else "/commits/" if "bitbucket" in name else "/commit/"
    return f"{scheme}://{host}{path}{where}{sha}"


def abort_effect(run: RunOut, deployments: list[DeploymentOut]) -> str:
    """What aborting the run will do, for its confirmation: said before it is done."""
    effects = []
    if run.state == "queued":
        effects.append("It has not started: it is cancelled and nothing runs.")
    elif run.state == "running":
        step = next((s for s in run.steps if s.state == "running"), None)
        what = f"Its running step ({step.kind} '{step.name}') is stopped" if step else "It stops"
        effects.append(f"{what}, the steps after it are skipped and no release is built.")
    for d in deployments:
        if d.state in ("queued", "waiting"):
            effects.append(f"Deployment #{d.id} to {d.environment} is cancelled before it starts.")
        elif d.state == "running":
            effects.append(
                f"Deployment #{d.id} of {d.release} to {d.environment} stops, and its hosts go "
                f"back to {d.previous_release or 'what they ran before'}."
            )
    return " ".join(effects)


@dataclass
class _Author:
    name: str
    email: str


def _author(value: str | None) -> _Author | None:
    if not value:
        return None
    name, _, email = value.partition(" <")
    return _Author(name=name.strip() or value, email=email.rstrip(">"))


def _deployments(session: Session, run_id: int) -> list[DeploymentOut]:
    rows = session.scalars(
        select(Deployment).where(Deployment.run_id == run_id).order_by(Deployment.id)
    ).all()
    return [deployment_out(d) for d in rows]


def _head(request: Request, caller: WebCaller, run: RunOut, session: Session) -> str:
    deployments = _deployments(session, run.id)
    active = [d for d in deployments if d.state in DEPLOYING]
    subject, _, body = (run.commit_message or "").partition("\n")
    may_abort = (run.state in ACTIVE or bool(active)) and caller.may(
        api_role(request, "POST", ABORT)
    )
    return fragment(
        "_run.html",
        run=run,
        caller=caller,
        commit_url=commit_url(_repo(session, run), run.sha),
        subject=subject.strip(),
        body=body.strip(),
        author=_author(run.commit_author),
        deployments=deployments,
        may_abort=may_abort,
        effect=abort_effect(run, active) if may_abort else "",
    )


def _repo(session: Session, run: RunOut) -> str:
    return session.get_one(Run, run.id).app.repo_url


def _step_head(step: Any) -> str:
    return fragment("_step_head.html", s=step)


def _live(run: RunOut, deployments_active: bool) -> bool:
    return run.state in ACTIVE or deployments_active


def digest(html: str) -> str:
    """A short name for a fragment's content, to tell whether a page already has it."""
    return hashlib.sha256(html.encode()).hexdigest()[:16]


class RunFeed:
    """One page's stream: the run's head and step heads as they change, logs as they grow.

    One per connection; it remembers which fragments it sent, so an unchanged one is
    not sent again. The cursor (what the page has of each log) comes with each call.
    `seen`: the digest of the run's head as the page was rendered with it: sending the
    same again would close an abort dialog the reader may have just opened.
    """

    def __init__(self, request: Request, caller: WebCaller, run_id: int, seen: str = "") -> None:
        self.request = request
        self.caller = caller
        self.run_id = run_id
        self.sent: dict[str, str] = {"run": seen} if seen else {}

    def _replace(self, out: list[live.Message], name: str, html: str) -> None:
        if self.sent.get(name) != (key := digest(html)):
            self.sent[name] = key
            out.append(live.Message(name, html))

    def __call__(self, cursor: str) -> live.Batch:
        offsets = logs.parse_cursor(cursor)
        out: list[live.Message] = []
        with self.request.app.state.sessions() as session:
            # the run (and its steps' states) before the logs: a step read as finished
            # has written all its log, so reading it to its end misses nothing
            run = get_run(self.run_id, self.caller, session)
            deploying = any(d.state in DEPLOYING for d in _deployments(session, run.id))
            self._replace(out, "run", _head(self.request, self.caller, run, session))
            complete = True
            for s in run.steps:
                row = session.get_one(Step, s.id)
                if s.id not in offsets:
                    start, end, html = logs.tail(self.request, row)
                    offsets[s.id] = end
                    self.sent[f"step-{s.id}"] = digest(_step_head(s))
                    out.append(
                        live.Message(
                            "steps",
                            fragment("_step.html", s=s, start=start, log_html=html),
                            logs.format_cursor(offsets),
                        )
                    )
                else:
                    self._replace(out, f"step-{s.id}", _step_head(s))
                    end, html = logs.since(self.request, row, offsets[s.id])
                    if html:
                        offsets[s.id] = end
                        out.append(live.Message(f"log-{s.id}", html, logs.format_cursor(offsets)))
                complete = complete and logs.finished(row) and end >= logs.size(self.request, row)
        return live.Batch(out, done=complete and not _live(run, deploying))


def run_page_response(
    request: Request, caller: WebCaller, run_id: int, *, error: str | None = None, status: int = 200
) -> Response:
    with request.app.state.sessions() as session:
        try:
            run = get_run(run_id, caller, session)
        except HTTPException as exc:
            return refused(request, caller, exc)
        offsets: dict[int, int] = {}
        steps = []
        for s in run.steps:
            start, end, html = logs.tail(request, session.get_one(Step, s.id))
            offsets[s.id] = end
            steps.append(fragment("_step.html", s=s, start=start, log_html=html))
        deploying = any(d.state in DEPLOYING for d in _deployments(session, run.id))
        head = _head(request, caller, run, session)
    return page(
        request,
        "run.html",
        status_code=status,
        caller=caller,
        title=f"Run #{run.id} · {run.app}",
        breadcrumbs=[("Apps", "/"), (run.app, f"/#app-{run.app}"), (f"run #{run.id}", None)],
        run=run,
        run_html=head,
        steps_html="".join(steps),
        live=_live(run, deploying),
        events_url=f"/ui/runs/{run.id}/events?"
        + urlencode({"at": logs.format_cursor(offsets), "seen": digest(head)}),
        error=error,
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: RecordId, request: Request, caller: PageViewer) -> Response:
    return run_page_response(request, caller, run_id)


@router.get("/ui/runs/{run_id}/events")
def run_events(
    run_id: RecordId, request: Request, caller: PageViewer, at: str = "", seen: str = ""
) -> Response:
    with request.app.state.sessions() as session:
        get_run(run_id, caller, session)  # a 404 for an unknown run, before streaming
    return live.appender(request, RunFeed(request, caller, run_id, seen), at)


@router.get("/ui/steps/{step_id}/log", response_class=HTMLResponse)
def earlier_log(
    step_id: RecordId, request: Request, caller: PageViewer, before: int = Query(ge=0, le=MAX_INT)
) -> Response:
    """The page of a step's log before `before`, with a button for the one before it."""
    with request.app.state.sessions() as session:
        step = session.get(Step, step_id)
        if step is None:
            raise HTTPException(404, f"unknown step {step_id}")
        start, html = logs.earlier(request, step, before)
    return HTMLResponse(
        (fragment("_log_earlier.html", s={"id": step_id}, start=start) if start else "") + html
    )


@router.post("/runs/{run_id}/abort")
async def abort(run_id: RecordId, request: Request) -> Response:
    caller = await action_caller(request, "POST", ABORT)

    def perform() -> Response:
        with request.app.state.sessions() as session:
            try:
                abort_run(run_id, request, caller, session)
            except HTTPException as exc:
                return run_page_response(
                    request, caller, run_id, error=str(exc.detail), status=exc.status_code
                )
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    return await run_in_threadpool(perform)


__all__ = ["abort_effect", "commit_url", "router"]
