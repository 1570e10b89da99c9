"""The fast path answers exactly as FastAPI would, or leaves the request to it.

Two applications on one real database, one with the fast path and one without, get the
same requests: status, body and headers must be equal; the fast one's counter says which
requests it answered itself (fresh kept reads by a verified token, /healthz) and which it
left to FastAPI (no token, a bad or revoked one, a query in another form, a stale answer).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from conveyor.server.api import runs as runs_api
from conveyor.server.api import status as status_api
from conveyor.server.app import Settings, create_app
from conveyor.server.auth import ensure_admin_token, hash_token
from conveyor.server.fastpath import app_name, at_most, query
from conveyor.server.recent import Answer
from conveyor.store.db import make_engine, migrate, session_factory
from conveyor.store.models import App, Token
from tests.helpers import running_server, wait_for

ADMIN = "cvy_fastpath_admin_token"
VIEWER = "cvy_fastpath_viewer_token"
KNOWN = {"app": app_name, "limit": at_most(1000)}


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (b"", {}),
        (b"app=shop", {"app": "shop"}),
        (b"app=shop&limit=5", {"app": "shop", "limit": "5"}),
        (b"limit=1000", {"limit": "1000"}),
        (b"limit=1001", None),  # FastAPI's 422
        (b"limit=0", None),
        (b"limit=05", None),  # not written plainly: FastAPI decides
        (b"limit=-1", None),
        (b"app=", None),  # an empty filter
        (b"app", None),
        (b"app=Shop", None),
        (b"app=sh%6Fp", None),  # escaped
        (b"app=a&app=b", None),  # twice
        (b"other=1", None),  # unknown: FastAPI ignores it, so must we not answer
        (b"app=" + b"a" * 101, None),
        (b"app=\xff", None),
        (b"&", None),
    ],
)
def test_query_strings_in_the_plain_form_only(raw: bytes, parsed: dict[str, str] | None) -> None:
    assert query(raw, KNOWN) == parsed


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'conveyor.db'}")
    migrate(engine)
    made = session_factory(engine)
    with made() as session:
        ensure_admin_token(session, ADMIN)
        session.add(Token(name="eyes", role="viewer", token_hash=hash_token(VIEWER)))
        session.add(App(name="shop", repo_url="/none.git", webhook_secret="s"))
        session.commit()
    return made


@pytest.fixture
def apps(tmp_path: Path, sessions: sessionmaker[Session]) -> Iterator[tuple[object, object]]:
    def made(fast: bool) -> object:
        settings = Settings(tmp_path / "data", "http://127.0.0.1", fast_path=fast)
        return create_app(settings, sessions)

    yield made(True), made(False)


Request = tuple[str, dict[str, str]]


def compare(apps: tuple[object, object], requests: list[Request]) -> tuple[int, list[int]]:
    """Send each request to the fast app then the slow one; assert equal answers.
    Returns how many the fast app answered itself, and the status codes."""
    fast, slow = apps

    async def main() -> tuple[int, list[int]]:
        transports = [httpx.ASGITransport(app=a) for a in (fast, slow)]  # type: ignore[arg-type]
        clients = [httpx.AsyncClient(transport=t, base_url="http://test") for t in transports]
        before = fast.fast.answered  # type: ignore[attr-defined]
        codes = []
        try:
            for path, headers in requests:
                a, b = [await c.get(path, headers=headers) for c in clients]
                assert (a.status_code, a.content) == (b.status_code, b.content), path
                assert a.headers.multi_items() == b.headers.multi_items(), path
                codes.append(a.status_code)
        finally:
            for c in clients:
                await c.aclose()
        return fast.fast.answered - before, codes  # type: ignore[attr-defined]

    return asyncio.run(main())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_healthz_is_answered_before_fastapi_the_same(apps: tuple[object, object]) -> None:
    answered, codes = compare(apps, [("/healthz", {}), ("/healthz?x=1", {})])
    assert (answered, codes) == (2, [200, 200])


def test_kept_reads_by_a_verified_token_are_answered_the_same(
    apps: tuple[object, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    # kept for a minute, not a second: on a loaded machine the 16 reads of the first pass
    # took longer than that once, and the second pass found one answer too old
    for kept in (status_api._recent, runs_api._recent):
        monkeypatch.setattr(kept, "fresh_for", 60.0)
    reads = ["/api/status", "/api/status?app=shop", "/api/runs", "/api/runs?app=shop&limit=5"]
    each = [(path, bearer(token)) for path in reads for token in (VIEWER, ADMIN)]
    compare(apps, each)  # each read (and token) first goes through FastAPI, then is kept
    answered, codes = compare(apps, each)
    assert codes == [200] * 8
    assert answered == 8


def etag_of(apps: tuple[object, object], path: str) -> str:
    async def main() -> str:
        transport = httpx.ASGITransport(app=apps[1])  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get(path, headers=bearer(VIEWER))).headers["etag"]

    return asyncio.run(main())


def test_not_modified_is_answered_the_same(apps: tuple[object, object]) -> None:
    compare(apps, [("/api/status", bearer(VIEWER)), ("/api/runs", bearer(VIEWER))])
    requests = []
    for path in ("/api/status", "/api/runs"):
        etag = etag_of(apps, path)
        for sent in (etag, f"W/{etag}", f'"other", {etag}', "*", '"other"'):
            requests.append((path, {**bearer(VIEWER), "If-None-Match": sent}))
    answered, codes = compare(apps, requests)
    assert codes == [304, 304, 304, 304, 200] * 2
    assert answered == 10


@pytest.mark.parametrize(
    ("sent", "unchanged"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),
        (' "x" , "abc" ', True),
        ("*", True),
        ('"abcd"', False),
        ("abc", False),
    ],
)
def test_if_none_match_names_the_answer(sent: str | None, unchanged: bool) -> None:
    assert Answer(b"[]", '"abc"').unchanged_for(sent) is unchanged


def test_refusals_and_other_forms_are_left_to_fastapi(
    apps: tuple[object, object], sessions: sessionmaker[Session]
) -> None:
    compare(apps, [("/api/status", bearer(VIEWER))])  # kept, token verified
    answered, codes = compare(
        apps,
        [
            ("/api/status", {}),
            ("/api/status", bearer("cvy_unknown")),
            ("/api/status", {"Authorization": "Basic eHg6eXk="}),
            ("/api/status?app=nope", bearer(VIEWER)),  # 404: nothing kept
            ("/api/status?app=", bearer(VIEWER)),  # no filter, as FastAPI reads it
            ("/api/runs?limit=0", bearer(VIEWER)),
            ("/api/status?extra=1", bearer(VIEWER)),  # FastAPI ignores it: same answer
        ],
    )
    assert codes == [401, 401, 401, 404, 200, 422, 200]
    assert answered == 0
    # a token revoked through this server is refused at once, fast path or not
    with sessions() as session:
        token = session.query(Token).filter_by(name="eyes").one()
        token.revoked_at = token.created_at
        session.commit()
    answered, codes = compare(apps, [("/api/status", bearer(VIEWER))])
    assert (answered, codes) == (0, [401])


def test_a_write_makes_the_next_read_go_through_fastapi(
    apps: tuple[object, object], sessions: sessionmaker[Session]
) -> None:
    compare(apps, [("/api/status", bearer(ADMIN))])
    assert compare(apps, [("/api/status", bearer(ADMIN))])[0] == 1
    with sessions() as session:
        session.add(App(name="books", repo_url="/none.git", webhook_secret="t"))
        session.commit()
    fast, _ = apps
    answered = fast.fast.answered  # type: ignore[attr-defined]
    compare(apps, [("/api/status", bearer(ADMIN))])
    assert fast.fast.answered == answered  # type: ignore[attr-defined]
    assert compare(apps, [("/api/status", bearer(ADMIN))])[0] == 1


def without_date(r: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in r.headers.multi_items() if k != "date"]


def test_a_real_server_answers_alike_either_way_and_logs_each_access(tmp_path: Path) -> None:
    """`?_=1` is unknown to the fast path (FastAPI goes on, ignoring it): the same read."""
    with running_server(tmp_path / "data") as server:
        server.add_app("shop", tmp_path / "none.git")
        anonymous = httpx.Client(base_url=server.url, timeout=30)
        codes = set()
        with anonymous:
            for path in ("/api/status", "/api/runs?app=shop&limit=5", "/healthz"):
                etag = server.http.get(path).headers.get("etag", '"none"')
                for client in (server.http, anonymous):
                    for sent in ('"anything"', etag):
                        if_none_match = {"If-None-Match": sent}
                        client.get(path, headers=if_none_match)  # kept, token verified
                        fast = client.get(path, headers=if_none_match)
                        sep = "&" if "?" in path else "?"
                        slow = client.get(f"{path}{sep}_=1", headers=if_none_match)
                        assert fast.status_code == slow.status_code, path
                        assert fast.content == slow.content, path
                        assert without_date(fast) == without_date(slow), path
                        codes.add(fast.status_code)
        assert codes == {200, 304, 401}, codes

        def accessed() -> list[str]:
            return re.findall(r'"logger": "uvicorn.access", "msg": "(.*)"}', server.log())

        for status in (200, 304, 401):  # lines are written in batches: wait for each
            line = f'GET /api/status HTTP/1.1\\" {status}'
            wait_for(lambda line=line: any(line in x for x in accessed()))


def test_healthz_answers_while_the_database_is_locked_and_every_thread_waits(
    tmp_path: Path,
) -> None:
    env = {"CONVEYOR_THREADS": "2", "CONVEYOR_DB_POOL": "2", "CONVEYOR_DB_WAIT": "2"}
    with running_server(tmp_path / "data", env) as server:
        db = tmp_path / "data" / "conveyor.db"
        conn = sqlite3.connect(db, isolation_level=None, timeout=10)
        try:
            conn.execute("BEGIN IMMEDIATE")  # every write of the server waits for it

            def write(i: int) -> int:
                body = {"name": f"t{i}", "role": "viewer"}
                return server.http.post("/api/tokens", json=body, timeout=30).status_code

            with ThreadPoolExecutor(6) as pool:
                writes = [pool.submit(write, i) for i in range(6)]
                probes = []
                while not all(w.done() for w in writes):
                    r = httpx.get(server.url + "/healthz", timeout=30)
                    probes.append(r.status_code)
                codes = [w.result() for w in writes]
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        assert probes and set(probes) == {200}
        assert set(codes) <= {201, 503}, codes
