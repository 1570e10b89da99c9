"""Recent answers of read-only routes, kept while nothing they read has changed.

A dashboard, a CLI `--follow` and scripts poll the same few lists; each answer is
kept as the bytes sent, with the write generations of the tables it read
(store/changes.py) taken *before* reading: a write through this server makes it
stale at once, and everything else (what another server sharing the database
wrote, what the clock changes) within `fresh_for`: an answer past half that age is
still given while the next one is read. A hit is answered on the
event loop, with no thread, query or serialisation; of the requests that miss
on one key at once, one reads and the others wait for its answer.

Each answer has an ETag (a digest of its bytes): a client that sends it back in
`If-None-Match` gets `304 Not Modified` and no body while the answer is the same.

While the database is away (store/outage.py), a read that fails for it is answered
with the last kept answer, however old, with its `Age` and `X-Conveyor-Database:
unavailable`: the server keeps serving the reads it can.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Response
from starlette.concurrency import run_in_threadpool

from conveyor.store import changes
from conveyor.store.outage import is_unavailable

# on an answer kept from before the database went away (with its `Age` in seconds)
STALE_HEADER = "x-conveyor-database"
MAX_KEYS = 1000  # kept answers (an app and a limit make a key): beyond, start over
# OpenAPI `responses=` of a route answered from here
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "not modified: the answer is still the one of the ETag sent"}
}


@dataclass(frozen=True)
class Answer:
    """An answer's bytes and its ETag."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, body: bytes) -> Answer:
        return cls(body, f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"')

    def unchanged_for(self, if_none_match: str | None) -> bool:
        """Whether a request's If-None-Match names this answer (weak comparison)."""
        if not if_none_match:
            return False
        if if_none_match.strip() == "*":
            return True
        tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
        return self.etag in tags

    def headers(self, not_modified: bool) -> list[tuple[bytes, bytes]]:
        """The headers of `response` (Starlette's, in its order), security headers aside."""
        etag = (b"etag", self.etag.encode())
        if not_modified:
            return [etag]
        length = (b"content-length", str(len(self.body)).encode())
        return [etag, length, (b"content-type", b"application/json")]

    def response(self, if_none_match: str | None) -> Response:
        if self.unchanged_for(if_none_match):
            return Response(status_code=304, headers={"etag": self.etag})
        return Response(self.body, media_type="application/json", headers={"etag": self.etag})


class Recent:
    """The recent answers of one route, by key."""

    def __init__(self, tables: tuple[str, ...], fresh_for: float = 1.0) -> None:
        self.tables = tables
        self.fresh_for = fresh_for
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[int, float, Answer]] = {}
        # the read underway per key, and the generation it started at
        self._reading: dict[str, tuple[int, asyncio.Task[Answer]]] = {}
        self._readers: dict[str, Callable[[], bytes]] = {}  # the last read asked, per key

    def generation(self) -> int:
        return sum(changes.generation(t) for t in self.tables)

    def get(self, key: str, since: int | None = None) -> Answer | None:
        """The kept answer if it was read after every write counted by `since` (default: now)
        and less than `fresh_for` ago. Past half that time, the next read starts (when one
        was ever asked for the key): whoever asks meanwhile gets this answer, nobody waits."""
        found = self._kept.get(key)
        if found is None:
            return None
        generation, at, answer = found
        wanted = self.generation() if since is None else since
        age = time.monotonic() - at
        if generation < wanted or age > self.fresh_for:
            return None
        if age > self.fresh_for / 2 and key not in self._reading and _on_a_loop():
            read = self._readers.get(key)
            if read is not None:
                self._start(key, self.generation(), read)
        return answer

    def put(self, key: str, generation: int, answer: Answer) -> None:
        with self._lock:
            if len(self._kept) >= MAX_KEYS:
                self._kept.clear()
                self._readers.clear()
            self._kept[key] = (generation, time.monotonic(), answer)

    async def kept(self, key: str) -> Answer | None:
        """The answer for `key` without reading: the kept one if fresh, else that of a read
        underway that will do; None when only a new read (`answer`) can tell, or it failed."""
        arrived = self.generation()
        answer = self.get(key, arrived)
        if answer is not None:
            return answer
        underway = self._reading.get(key)
        if underway is None or underway[0] < arrived:
            return None
        try:
            return await asyncio.shield(underway[1])
        except Exception:
            return None  # `answer` reads again and says what went wrong

    async def answer(
        self, key: str, read: Callable[[], bytes], if_none_match: str | None = None
    ) -> Response:
        """The kept answer for `key`, or `read()`'s (in a request thread), kept; 304 when
        `if_none_match` names it."""
        self._readers[key] = read
        arrived = self.generation()
        answer = self.get(key, arrived)
        if answer is None:
            underway = self._reading.get(key)
            # a read underway will do if it started after every write this caller could
            # know of; all its callers wake together when it ends (a lock would wake them
            # one by one, a turn of a busy event loop each)
            if underway is None or underway[0] < arrived:
                underway = self._start(key, arrived, read)
            # a caller that goes away does not cancel the read the others wait for
            try:
                answer = await asyncio.shield(underway[1])
            except Exception as exc:
                kept = self._kept.get(key)
                if kept is None or not is_unavailable(exc):
                    raise
                # the database away: the last answer, however old, saying so and its age
                response = kept[2].response(if_none_match)
                response.headers["age"] = str(int(time.monotonic() - kept[1]))
                response.headers[STALE_HEADER] = "unavailable"
                return response
        return answer.response(if_none_match)

    def _start(
        self, key: str, generation: int, read: Callable[[], bytes]
    ) -> tuple[int, asyncio.Task[Answer]]:
        underway = (generation, asyncio.ensure_future(self._read(key, generation, read)))
        self._reading[key] = underway
        return underway

    async def _read(self, key: str, generation: int, read: Callable[[], bytes]) -> Answer:
        try:
            answer = Answer.of(await run_in_threadpool(read))
            self.put(key, generation, answer)
            return answer
        finally:
            task = asyncio.current_task()
            if (found := self._reading.get(key)) is not None and found[1] is task:
                del self._reading[key]
            # the callers may all have gone: nobody else would retrieve an error
            if task is not None:
                task.add_done_callback(_retrieved)


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _retrieved(task: asyncio.Task[Answer]) -> None:
    if not task.cancelled():
        task.exception()


__all__ = ["NOT_MODIFIED", "STALE_HEADER", "Answer", "Recent"]
