"""`conveyor demo`: the whole system on one machine, a sample app pushed to production twice.

A server on a temporary data directory; three local hosts (an agent and its
embedded router each, on 127.0.0.2-4); the sample app in a bare git repository
whose post-receive hook tells the server of each push. The first push (v1) climbs
staging → production; the second (v2) does it again under a little load, so that
production's canary has traffic to judge. A gentler load goes on until Ctrl-C, for
the deployments the user starts from the commands the demo prints.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table

from conveyor.cli.follow import follow_run
from conveyor.cli.render import bare
from conveyor.cli.tables import Column, fitted
from conveyor.client import Client
from conveyor.demo.hosts import (
    DEMO_NAME,
    LocalHost,
    check_ports_free,
    conveyor_process,
    start_agents,
    stop_hosts,
)
from conveyor.demo.localca import DemoCertificates, make_certificates
from conveyor.demo.sample import GIT_IDENTITY, git, sample_server, write_sample_app
from conveyor.demo.traffic import Traffic
from conveyor.demo.watch import ChainWatcher
from conveyor.protocol import RunOut

console = Console(highlight=False, soft_wrap=True)  # one line per event: greppable
APP = "sample"
HOSTS = (  # name, environment, address
    ("stage-1", "staging", "127.0.0.2"),
    ("web-1", "production", "127.0.0.3"),
    ("web-2", "production", "127.0.0.4"),
)
# The canary is judged on the counters agents report (every 2 s; far slower on a
# starved machine). With advance: early a step moves on as soon as the new release
# has passed on min_requests of its own: 60 requests a second give a 25% canary its
# 30 in about 2 s. step_pause only bounds the wait: without enough requests in
# 3 x step_pause the step fails, and 30 s outlasts a busy machine's slow reports.
# After the pushes a gentler load keeps going until Ctrl-C: 20 requests a second
# still give a 25% canary its 30 requests in 6 s, for the deployments the user starts.
DEPLOY_RATE = 60.0
IDLE_RATE = 20.0
ENVIRONMENTS = """
environments:
  staging:
    hosts: [stage-1]
    verify:
      - http: GET /healthz
        expect: 200
      - run: python3 scripts/smoke.py
  production:
    hosts: [web-1, web-2]
    strategy: canary
    steps: [25, 50, 100]
    step_pause: 10s
    analysis: {error_rate: 5%, min_requests: 30, advance: early}
    monitor: 5s             # after 100%: the judge keeps looking, a breach rolls back
    domains: [NAME]        # by host name, on each router's shared ports
    tls: {cert: CERT, key: KEY}   # from the demo's own CA
    verify:
      - http: GET /
"""
SMOKE_PY = '''\
"""Smoke test of a deployed release: its page answers, from the release just deployed."""
import json
import os
import urllib.request

url = os.environ["CONVEYOR_URL"]
with urllib.request.urlopen(url, timeout=10) as answer:
    page = json.loads(answer.read())
assert page["greeting"].startswith("hello"), page
assert page["release"] == os.environ["CONVEYOR_RELEASE"], page
print(f"smoke: {url} says {page['greeting']!r} from {page['release']}")
'''


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer on {url} within {timeout:g}s")


def run_demo(listen: str = "127.0.0.1:8420", wait: bool = True) -> int:
    """Run the demo; with `wait`, keep it up until SIGINT/SIGTERM. Returns the exit code."""
    root = Path(tempfile.mkdtemp(prefix="conveyor-demo-"))
    token = "cvy_demo_" + secrets.token_urlsafe(16)
    url = f"http://{listen}"
    hosts = [
        LocalHost(name, env, address, root, by_name=env == HOSTS[-1][1])
        for name, env, address in HOSTS
    ]
    certificates = make_certificates(root / "tls", DEMO_NAME)
    trust = ssl.create_default_context(cafile=str(certificates.ca))
    production = [h.url for h in hosts if h.environment == HOSTS[-1][1]]
    traffic = Traffic(production, rate=DEPLOY_RATE, host=DEMO_NAME, verify=trust)
    console.print(f"[bold]conveyor demo[/bold] in {root}")
    server: subprocess.Popen[bytes] | None = None
    code = 0
    try:
        check_ports_free(hosts)
        env = {**os.environ, "CONVEYOR_ADMIN_TOKEN": token}
        server = conveyor_process(
            ["server", "--data", str(root / "data"), "--listen", listen], root / "server.log", env
        )
        wait_healthy(url, server)
        console.print(f"server up at {url} (log: {root / 'server.log'})")
        client = Client(url, token)
        start_agents(client, url, hosts)
        for host in hosts:
            console.print(
                f"host [bold]{host.name}[/bold] ({host.environment}): agent and router "
                f"on {host.address} (log: {host.log})"
            )
        work = make_repositories(client, root, certificates)
        if not pipeline(client, work, hosts, traffic, trust):
            code = 1
            return code
        print_urls(url, token, hosts, work, root, certificates.ca)
        if wait:
            # the next deployment's canary is judged on traffic: keep some coming
            traffic.set_rate(IDLE_RATE)
            console.print(
                f"load generator: about {IDLE_RATE:g} requests a second to "
                f"{', '.join(production)} until Ctrl-C, so that the canary of your next "
                "deployment has traffic to judge",
                soft_wrap=True,
            )
            console.print("everything keeps running; [bold]Ctrl-C[/bold] to stop and clean up")
            stop = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop)
            signal.sigwait(stop)
        return code
    except KeyboardInterrupt:
        return code
    except RuntimeError as exc:
        console.print(f"[red]demo failed: {escape(str(exc))}[/red]")
        code = 1
        return code
    finally:
        console.print("stopping the load, the hosts, their instances and routers, and the server…")
        traffic.stop()
        stop_hosts(hosts)
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        console.print(
            f"conveyor demo stopped{' (it failed)' if code else ''}; its files stay in {root}",
            soft_wrap=True,
        )


def make_repositories(client: Client, root: Path, certificates: DemoCertificates) -> Path:
    """The app's bare repository (with conveyor's post-receive hook) and a working copy.

    The app is registered from the bare repository; the demo commits in the working
    copy and pushes, as a developer would. Returns the working copy.
    """
    bare = root / f"{APP}.git"
    subprocess.run(
        ["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True, capture_output=True
    )
    client.add_app({"name": APP, "repo": str(bare)})
    hook = bare / "hooks" / "post-receive"
    hook.write_text(client.hook_script(APP))
    hook.chmod(0o755)
    work = root / f"{APP}-app"
    (work / "scripts").mkdir(parents=True)
    (work / "scripts" / "smoke.py").write_text(SMOKE_PY)
    environments = (
        ENVIRONMENTS.replace("NAME", DEMO_NAME)
        .replace("CERT", str(certificates.cert))
        .replace("KEY", str(certificates.key))
    )
    write_sample_app(work, APP, extra=environments)
    git(work, "remote", "add", "origin", str(bare))
    # `git push` alone works too: main tracks the bare repository's main; and a commit
    # made in another shell has an author even where git has no identity configured
    git(work, "config", "branch.main.remote", "origin")
    git(work, "config", "branch.main.merge", "refs/heads/main")
    git(work, "config", "user.name", GIT_IDENTITY["GIT_AUTHOR_NAME"])
    git(work, "config", "user.email", GIT_IDENTITY["GIT_AUTHOR_EMAIL"])
    console.print(
        f"app [bold]{APP}[/bold] registered from {bare} (its post-receive hook tells the server "
        f"of each push); working copy: {work}"
    )
    return work


def pipeline(
    client: Client, work: Path, hosts: list[LocalHost], traffic: Traffic, trust: ssl.SSLContext
) -> bool:
    """Push v1 and see it reach production, then v2 under load; True if both got there."""
    environments = list(dict.fromkeys(h.environment for h in hosts))
    labels: dict[str, str] = {}
    watcher = ChainWatcher(client, console, APP, environments, labels=labels)

    console.rule("[bold]v1: the first push[/bold]")
    v1 = climb(client, watcher, push(client, work), labels, "v1")
    if v1 is None:
        return False
    show_serving(hosts, {h.name: v1 for h in hosts}, trust)

    console.rule("[bold]v2: a change, pushed while production takes traffic[/bold]")
    traffic.start()
    console.print(
        f"load generator: about {DEPLOY_RATE:g} requests a second to {', '.join(traffic.urls)}"
    )
    (work / "app" / "server.py").write_text(sample_server("hello from sample, v2"))
    git(work, "commit", "-q", "-am", "Say hello from v2")
    pushed = push(client, work)
    watcher.traffic = traffic
    v2 = climb(client, watcher, pushed, labels, "v2")
    result = traffic.result
    by_release = ", ".join(f"{n} by {labels.get(r, r)}" for r, n in sorted(result.releases.items()))
    style = "green" if result.failed == 0 else "red bold"
    console.print(
        f"[{style}]load generator: {result.sent} requests during the deployment, "
        f"{result.failed} failed[/{style}]; answered {by_release or 'by none'}"
    )
    for error in result.errors[:5]:
        console.print(f"  [red]{escape(error)}[/red]")
    if v2 is None:
        return False
    show_serving(hosts, {h.name: v2 for h in hosts}, trust)
    return True


def push(client: Client, work: Path) -> RunOut:
    """`git push origin main` from the working copy; the run the hook started."""
    sha = git(work, "rev-parse", "HEAD")
    subject = git(work, "log", "-1", "--format=%s")
    console.print(f"[bold]$ git push origin main[/bold]  [dim]({sha[:7]} {escape(subject)})[/dim]")
    done = subprocess.run(
        ["git", "push", "origin", "main"], cwd=work, capture_output=True, text=True, check=False
    )
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("remote:"):
            console.print(f"  [dim]{escape(line)}[/dim]")
    if done.returncode != 0:
        raise RuntimeError(f"git push failed: {done.stderr.strip()}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = next((r for r in client.runs(APP, 10) if r.sha == sha), None)
        if found is not None:
            return found
        time.sleep(0.2)
    raise RuntimeError(f"the push of {sha[:7]} started no run (see server.log)")


def climb(
    client: Client, watcher: ChainWatcher, run: RunOut, labels: dict[str, str], label: str
) -> str | None:
    """Follow the run (tests, build), then its release up every environment; the release
    if it reached the last one."""
    state = follow_run(client, run.id, console)
    release = client.run(run.id).release
    if state != "succeeded" or release is None:
        console.print(f"[red]the run of {label} did not succeed[/red]")
        return None
    labels[release] = label
    ended = watcher.follow(run.id)
    last = ended.get(watcher.environments[-1])
    if last is None or last.state != "succeeded":
        console.print(f"[red]{label} did not reach {watcher.environments[-1]}[/red]")
        return None
    return release


def show_serving(hosts: list[LocalHost], expected: dict[str, str], trust: ssl.SSLContext) -> None:
    """Ask every host's router what it serves: each must answer with the expected release
    (by the app's name over HTTPS, checked against the demo's CA, where it has one)."""
    rows: list[list[RenderableType]] = []
    for host in hosts:
        page: dict[str, Any] = {}
        deadline = time.monotonic() + 10
        named = {"headers": {"Host": DEMO_NAME}, "extensions": {"sni_hostname": DEMO_NAME}}
        while page.get("release") != expected[host.name] and time.monotonic() < deadline:
            try:
                with httpx.Client(verify=trust, timeout=2) as http:
                    page = http.get(host.url, **(named if host.by_name else {})).json()  # type: ignore[arg-type]
            except (httpx.HTTPError, ValueError):
                time.sleep(0.2)
        if page.get("release") != expected[host.name]:
            raise RuntimeError(
                f"{host.url} answers {page or 'nothing'}, not release {expected[host.name]}"
            )
        rows.append([host.environment, host.name, host.url, page["release"], page["greeting"]])
    columns = [
        Column("environment"),
        Column("host"),
        Column("url"),
        Column("release"),
        Column("greeting", wrap=True),
    ]
    console.print(fitted(console, columns, rows))


def print_urls(
    url: str, token: str, hosts: list[LocalHost], work: Path, root: Path, ca: Path
) -> None:
    console.rule("[bold green]conveyor demo is up[/bold green]")
    grid = Table.grid(padding=(0, 2))
    grid.add_row("server (API)", url)
    grid.add_row("API docs", f"{url}/docs")
    grid.add_row("dashboard", f"{url}/  (sign in with the admin token below)")
    grid.add_row("environment", f"{url}/apps/{APP}/environments/production")
    grid.add_row("admin token", token)
    for host in hosts:
        where = f"https://{DEMO_NAME}:{host.url.rsplit(':', 1)[1]} at {host.address}"
        grid.add_row(f"{host.environment} {host.name}", where if host.by_name else host.url)
    grid.add_row("demo CA", str(ca))
    grid.add_row("logs", f"{root}/*.log")
    console.print(grid)
    console.print(f"\nproduction serves the app by its name {DEMO_NAME} over HTTPS; try:")
    for host in hosts:
        if host.by_name:
            bare(f"  {host.curl(ca)}", console)
    console.print("\ntry, in another shell (each line as it is):")
    for line in next_steps(url, token, work):
        bare(f"  {line}", console)


def next_steps(url: str, token: str, work: Path) -> list[str]:
    """The commands the demo suggests, one line each, to be pasted as they are."""
    lines = [f"export CONVEYOR_SERVER={url} CONVEYOR_TOKEN={token}"]
    exe = Path(sys.executable).parent / "conveyor"
    if exe.exists() and sys.prefix != sys.base_prefix:
        # a virtualenv (`make demo` runs in one): another shell may not have it active
        lines.append(f'export PATH="{exe.parent}:$PATH"')
    lines += [
        f"conveyor status {APP}                         # which release serves where, and how",
        f"conveyor history {APP}                        # deployments (--runs: tests, builds)",
        f"conveyor rollback {APP} production --follow   # back to v1: a router switch",
        f"conveyor deploy {APP} production --follow     # v2 again, through the canary",
        f"cd {shlex.quote(str(work))} && ${{EDITOR:-vi}} app/server.py "
        "&& git commit -qam change && git push origin main",
    ]
    return lines
