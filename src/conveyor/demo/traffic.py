"""The demo's load generator: steady requests to the production routers, counted by release.

A canary step is judged on the new release's own traffic, so the demo makes some:
a paced thread per URL, each on a keep-alive connection, well below what would
crowd a small machine.
"""

from __future__ import annotations

import contextlib
import signal
import ssl
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import httpx


@dataclass
class TrafficResult:
    """What the clients saw: answers by status and by release, and connection errors."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    releases: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.errors) + sum(n for s, n in self.statuses.items() if s >= 500)


class Traffic:
    """GET each URL `rate` times a second in all, until stopped; a context manager."""

    def __init__(
        self,
        urls: list[str],
        *,
        rate: float = 60.0,
        window: float = 3.0,
        host: str | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.urls = urls
        # by host name (HTTPS to the routers' shared port: the name is the SNI too)
        self.host = host
        self.verify = verify
        self.interval = len(urls) / rate  # between two requests of one client
        self.window = window
        self.result = TrafficResult()
        self._recent: deque[tuple[float, str]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(url,), daemon=True, name=f"traffic {url}")
            for url in urls
        ]

    def __enter__(self) -> Traffic:
        return self.start()

    def start(self) -> Traffic:
        for thread in self._threads:
            if thread.ident is None:  # not started yet
                thread.start()
        return self

    def set_rate(self, rate: float) -> None:
        """Requests a second in all from now on (each client reads it before its next request)."""
        self.interval = len(self.urls) / rate

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> TrafficResult:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=10)
        return self.result

    def recent(self) -> tuple[float, Counter[str]]:
        """Requests a second, and answers by release, over the last `window` seconds."""
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - self.window:
                self._recent.popleft()
            shares = Counter(release for _, release in self._recent)
        return sum(shares.values()) / self.window, shares

    def _client(self, url: str) -> None:
        # Ctrl-C is for the main thread, which waits for it with sigwait: a signal taken
        # by this thread would never reach it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        headers = {"Host": self.host} if self.host else {}
        extensions = {"sni_hostname": self.host} if self.host else None
        with httpx.Client(timeout=10, verify=self.verify or True) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                release = "?"
                try:
                    answer = client.get(url, headers=headers, extensions=extensions)
                    status: int | None = answer.status_code
                    with contextlib.suppress(ValueError):
                        release = str(answer.json().get("release", "?"))
                    error = None
                except httpx.HTTPError as exc:
                    status, error = None, f"{url}: {type(exc).__name__}: {exc}"
                with self._lock:
                    self.result.sent += 1
                    if error is not None:
                        self.result.errors.append(error)
                    else:
                        assert status is not None
                        self.result.statuses[status] += 1
                        if status < 500:
                            self.result.releases[release] += 1
                            self._recent.append((time.monotonic(), release))
                next_at = max(next_at + self.interval, time.monotonic() - self.interval)
                self._stop.wait(max(0.0, next_at - time.monotonic()))
