"""Zero loss through HTTPS with two apps on one host, for each router backend.

Two apps (shop, blog) on one host's shared HTTPS port, each by its name with its own
certificate (trustme files, `tls: {cert, key}`). Paced keep-alive clients run over HTTPS
against both while shop goes through a deploy, a warm rollback, a deploy that leaves
nothing warm, a cold rollback and two failed deploys (crash on start, never healthy)
through the real server and agent; blog is left alone. Prints, per app, requests sent,
connection errors, 5xx and which release answered.

    uv run python bench/zero_loss_tls.py [--router embedded|haproxy|both] [--rounds 1]
        [--clients 8] [--rate 25]
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conveyor.demo.sample import sample_config, write_sample_app
from testbed.fleet import AgentProcess, LoadGenerator, LoadResult
from testbed.helpers import ServerProcess, commit, free_port, wait_for

ADDRESS = "127.0.60.9"
ENVIRONMENT = """
environments:
  production:
    hosts: [web-1]
    domains: [{name}]
    tls: {{cert: {cert}, key: {key}}}
"""


def build(
    server: ServerProcess, app: str, repo: Path, extra: str, label: str, **config: object
) -> str:
    text = sample_config(app, port=free_port(ADDRESS), extra=extra, **config)  # type: ignore[arg-type]
    commit(repo, {"conveyor.yml": text, "VERSION": label})
    with server.api() as api:
        started = api.start_run(app, None)
        run = wait_for(
            lambda: (r := api.run(started.id)).state not in ("queued", "running") and r,
            timeout=180,
            interval=0.2,
        )
    assert run.state == "succeeded" and run.release is not None, run
    return run.release


def scenario(router: str, rounds: int, clients: int, rate: float) -> dict[str, LoadResult]:
    with tempfile.TemporaryDirectory(prefix=f"conveyor-bench-tls-{router}-") as tmp:
        root = Path(tmp)
        ca = trustme.CA()
        server = ServerProcess(root / "data").start()
        extra: dict[str, str] = {}
        repos: dict[str, Path] = {}
        for app in ("shop", "blog"):
            name = f"{app}.example.com"
            leaf = ca.issue_cert(name)
            cert, key = root / f"{app}.pem", root / f"{app}.key"
            leaf.cert_chain_pems[0].write_to_path(str(cert))
            leaf.private_key_pem.write_to_path(str(key))
            extra[app] = ENVIRONMENT.format(name=name, cert=cert, key=key)
            repos[app] = root / app
            write_sample_app(repos[app], app, extra=extra[app])
            with server.api() as api:
                api.add_app({"name": app, "repo": str(repos[app])})
        http_port, https_port = free_port(ADDRESS), free_port(ADDRESS)
        agent = AgentProcess(server, "web-1", root / "agent", address=ADDRESS, router=router)
        agent.args += ["--http-port", str(http_port), "--https-port", str(https_port)]
        try:
            blog = build(server, "blog", repos["blog"], extra["blog"], "v1")
            v1 = build(server, "shop", repos["shop"], extra["shop"], "v1")
            v2 = build(server, "shop", repos["shop"], extra["shop"], "v2")
            v3 = build(server, "shop", repos["shop"], extra["shop"], "v3", keep_warm="0s")
            crash = build(server, "shop", repos["shop"], extra["shop"], "crash", start="exit 3")
            sick = build(
                server, "shop", repos["shop"], extra["shop"], "sick",
                health_status=500, health_timeout="3s",
            )  # fmt: skip
            agent.start()
            agent.set("blog", {blog: 100})
            agent.set("shop", {v1: 100})
            agent.wait_routed("blog", {blog: 100})
            agent.wait_routed("shop", {v1: 100})
            trust = ssl.create_default_context()
            ca.configure_trust(trust)
            url = f"https://{ADDRESS}:{https_port}/"
            loads = {
                app: LoadGenerator(
                    url, clients=clients, rate=rate, host=f"{app}.example.com", tls=trust,
                    max_seconds=900,
                )
                for app in ("shop", "blog")
            }  # fmt: skip
            for load in loads.values():
                load.__enter__()
            try:
                for load in loads.values():
                    load.wait_requests(50)
                for _ in range(rounds):
                    for weights in ({v2: 100}, {v1: 100}, {v3: 100}):
                        agent.set("shop", weights)
                        agent.wait_routed("shop", weights)
                    wait_for(lambda: agent.release("shop", v1) is None, timeout=60)
                    agent.set("shop", {v1: 100})  # cold rollback
                    agent.wait_routed("shop", {v1: 100})
                    for bad in (crash, sick):  # failed deploys
                        agent.set("shop", {bad: 100})
                        wait_for(
                            lambda b=bad: (agent.release("shop", b) or {}).get("phase") == "failed",
                            timeout=60,
                        )
                    agent.set("shop", {v1: 100})
                    agent.wait_routed("shop", {v1: 100})
                for load in loads.values():
                    load.wait_requests(50)
            finally:
                results = {app: load.stop() for app, load in loads.items()}
            return results
        finally:
            agent.stop_everything()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", choices=["embedded", "haproxy", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clients", type=int, default=8, help="per app")
    parser.add_argument("--rate", type=float, default=25.0, help="requests a second per client")
    args = parser.parse_args()
    routers = ["embedded", "haproxy"] if args.router == "both" else [args.router]
    if "haproxy" in routers and shutil.which("haproxy") is None:
        sys.exit("haproxy is not installed: run scripts/setup.sh")
    for router in routers:
        started = time.perf_counter()
        results = scenario(router, args.rounds, args.clients, args.rate)
        took = time.perf_counter() - started
        for app, result in results.items():
            five = sum(n for s, n in result.statuses.items() if s >= 500)
            print(
                f"[{router}] {app}: requests {result.sent}, connection errors "
                f"{len(result.errors)}, 5xx {five}, by release {dict(result.releases)} "
                f"({took:.0f}s)"
            )
            if result.errors:
                print(f"[{router}] {app}: first errors: {result.errors[:3]}")


if __name__ == "__main__":
    main()
