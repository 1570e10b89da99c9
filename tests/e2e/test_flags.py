"""Feature flags against a real server: declared in conveyor.yml, changed through the API
and the CLI with a recorded history, viewers read only, bad input refused by name."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from UnleashClient import UnleashClient

from conveyor.agent.routing.embedded import EmbeddedRouter
from conveyor.agent.routing.spec import RouteSpec, Target
from conveyor.flags import Context, FlagSet
from conveyor.flags.header import header_value
from conveyor.flags.provider import ConveyorProvider
from conveyor.protocol.desired import HostFlags
from conveyor.protocol.unleash import ClientFeatures
from tests.helpers import ServerProcess, free_port, make_repo, running_server, wait_for
from tests.router.backend import Backend

CONFIG = """\
app: shop
test: []
build: []
service:
  start: python3 -m http.server $PORT
  port: 18080
environments:
  staging:
    hosts: [web-1]
  production:
    hosts: [web-2]
flags:
  declare:
    - name: new-checkout
      description: the one-page checkout
    - name: search
      variants: [{name: a, weight: 50}, {name: b, weight: 50, payload: blue}]
"""

FLAGS = "/api/apps/shop/environments/{env}/flags"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with app `shop` and one release declaring two flags."""
    root = tmp_path_factory.mktemp("flags")
    with running_server(root / "data") as server:
        make_repo(root / "repo", {"conveyor.yml": CONFIG})
        server.add_app("shop", root / "repo")
        run = server.post("/api/apps/shop/runs", {})
        assert server.wait_run(run["id"])["state"] == "succeeded"
        yield server


def _token(server: ServerProcess, role: str) -> str:
    return str(server.post("/api/tokens", {"name": f"{role}-person", "role": role})["token"])


def _as(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_declared_flags_start_off_in_every_environment(shop: ServerProcess) -> None:
    for env in ("staging", "production"):
        flags = {f["name"]: f for f in shop.get(FLAGS.format(env=env))}
        assert set(flags) == {"new-checkout", "search"}
        assert all(f["declared"] and not f["state"]["enabled"] for f in flags.values())
        assert flags["new-checkout"]["description"] == "the one-page checkout"
        assert [v["weight"] for v in flags["search"]["state"]["variants"]] == [50, 50]


def test_a_change_is_recorded_with_who_when_before_and_after(shop: ServerProcess) -> None:
    path = FLAGS.format(env="production") + "/new-checkout"
    with _as(shop, _token(shop, "deployer")) as deployer:
        changed = deployer.patch(path, json={"enabled": True, "rollout": 10})
        assert changed.status_code == 200, changed.text
        assert changed.json()["state"]["rollout"] == 10
        second = deployer.patch(path, json={"rollout": 25}).json()
    assert [h["by"] for h in second["history"]] == ["deployer-person", "deployer-person"]
    first, last = second["history"]
    assert first["before"]["enabled"] is False and first["after"]["enabled"] is True
    assert last["before"]["rollout"] == 10 and last["after"]["rollout"] == 25
    assert second["updated_by"] == "deployer-person" and second["updated_at"]
    # the other environment is untouched
    staging = shop.get(FLAGS.format(env="staging") + "/new-checkout")
    assert staging["state"]["enabled"] is False and staging["history"] == []


def test_viewers_read_but_never_change(shop: ServerProcess) -> None:
    path = FLAGS.format(env="staging") + "/search"
    with _as(shop, _token(shop, "viewer")) as viewer:
        assert viewer.get(FLAGS.format(env="staging")).status_code == 200
        assert viewer.patch(path, json={"enabled": True}).status_code == 403
        assert viewer.post(FLAGS.format(env="staging"), json={"name": "x"}).status_code == 403
    assert shop.get(path)["state"]["enabled"] is False


def _refused(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    text = response.text
    assert all(w in text for w in words), text


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/api/apps/nope/environments/staging/flags/search", {"enabled": True}, 404, ["nope"]),
        (FLAGS.format(env="qa") + "/search", {"enabled": True}, 404, ["qa", "staging"]),
        (FLAGS.format(env="staging") + "/nope", {"enabled": True}, 404, ["nope", "search"]),
        (FLAGS.format(env="staging") + "/search", {"rollout": 101}, 422, ["rollout", "100"]),
        (FLAGS.format(env="staging") + "/search", {"rollout": -1}, 422, ["rollout"]),
        (
            FLAGS.format(env="staging") + "/search",
            {"variants": [{"name": "a", "weight": 60}, {"name": "b", "weight": 30}]},
            422,
            ["add up to 90", "100"],
        ),
        (
            FLAGS.format(env="staging") + "/search",
            {"constraints": [{"context_name": "plan", "operator": "LIKE", "values": ["x"]}]},
            422,
            ["unknown constraint operator 'LIKE'"],
        ),
    ],
)
def test_bad_input_is_refused_by_name_and_changes_nothing(
    shop: ServerProcess, path: str, body: dict[str, Any], status: int, words: list[str]
) -> None:
    before = shop.get(FLAGS.format(env="staging") + "/search")
    _refused(shop.http.patch(path, json=body), status, *words)
    assert shop.get(FLAGS.format(env="staging") + "/search") == before


def test_a_flag_created_at_runtime(shop: ServerProcess) -> None:
    body = {"name": "dark-mode", "description": "night", "variants": []}
    created = shop.http.post(FLAGS.format(env="staging"), json=body)
    assert created.status_code == 201, created.text
    assert created.json()["declared"] is False
    assert created.json()["history"][0]["before"] is None
    _refused(shop.http.post(FLAGS.format(env="staging"), json=body), 409, "already exists")
    names = [f["name"] for f in shop.get(FLAGS.format(env="staging"))]
    assert names == ["dark-mode", "new-checkout", "search"]


def test_the_cli(shop: ServerProcess) -> None:
    def cli(*args: str) -> str:
        done = shop.cli("flag", *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "search in staging of shop: on" in cli("on", "shop", "staging", "search")
    assert "30%  by sessionId" in cli(
        "rollout", "shop", "staging", "search", "30", "--stickiness", "sessionId"
    )
    said = cli(
        "target", "shop", "staging", "search", "--users", "u1,u2",
        "--where", "plan in pro,team", "--where", "version not semver_lt 2.0.0",
    )  # fmt: skip
    assert "users u1,u2" in said and "where plan in pro,team" in said
    assert "where version not semver_lt 2.0.0" in said
    shown = cli("show", "shop", "staging", "search")
    assert shown.count("admin (CONVEYOR_ADMIN_TOKEN)") == 3
    assert "off" in cli("off", "shop", "staging", "search")
    bad = shop.cli("flag", "target", "shop", "staging", "search", "--where", "plan like x")
    assert bad.returncode == 2 and "unknown constraint operator 'LIKE'" in bad.stderr


# -- the Unleash client API, read by the official Python SDK --------------------------


def _client_token(server: ServerProcess, env: str) -> str:
    path = f"/api/apps/shop/environments/{env}/flag-tokens"
    return str(server.post(path, {"name": f"sdk-{env}"})["token"])


def test_client_tokens_read_their_app_and_environment_only(shop: ServerProcess) -> None:
    staging, production = _client_token(shop, "staging"), _client_token(shop, "production")
    scoped = "/api/apps/shop/environments/production/unleash/client/features"
    with httpx.Client(base_url=shop.url, timeout=30) as http:
        assert http.get(scoped, headers={"Authorization": production}).status_code == 200
        _refused(http.get(scoped, headers={"Authorization": staging}), 403, "staging of shop")
        _refused(http.get("/api/client/features"), 401, "client token")
        _refused(
            http.get("/api/client/features", headers={"Authorization": shop.token}),
            401,
            "client token",
        )
        # the unscoped path: the token says which environment
        names = {
            f["name"]: f["enabled"]
            for f in http.get("/api/client/features", headers={"Authorization": production}).json()[
                "features"
            ]
        }
    listed = {f["name"]: f["state"]["enabled"] for f in shop.get(FLAGS.format(env="production"))}
    assert names == listed


def test_features_carry_an_etag_and_answer_304_until_a_change(shop: ServerProcess) -> None:
    token = {"Authorization": _client_token(shop, "staging")}
    with httpx.Client(base_url=shop.url, timeout=30) as http:
        first = http.get("/api/client/features", headers=token)
        etag = first.headers["etag"]
        again = http.get("/api/client/features", headers={**token, "If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag
        shop.http.patch(FLAGS.format(env="staging") + "/new-checkout", json={"rollout": 42})
        changed = http.get("/api/client/features", headers={**token, "If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag


SEARCH = {
    "enabled": True,
    "rollout": 60,
    "user_ids": ["vip-1"],
    "constraints": [{"context_name": "plan", "operator": "NOT_IN", "values": ["blocked"]}],
    "variants": [
        {"name": "a", "weight": 30},
        {"name": "b", "weight": 50, "payload": "blue"},
        {"name": "c", "weight": 20},
    ],
}
USERS = 10_000
SCOPED_URL = "{url}/api/apps/shop/environments/production/unleash"


def _user(i: int) -> dict[str, Any]:
    """User i's context: every 50th is on plan "blocked" (as testbed/node_sdk/variants.js)."""
    return {"userId": f"user-{i}", "properties": {"plan": "blocked" if i % 50 == 0 else "pro"}}


def _search_in_production(shop: ServerProcess) -> tuple[str, FlagSet]:
    """`search` rolled out to 60% of production with three variants; a client token for it
    and conveyor's evaluator over the very document the SDKs read."""
    path = FLAGS.format(env="production") + "/search"
    assert shop.http.patch(path, json=SEARCH).status_code == 200
    token = _client_token(shop, "production")
    document = shop.http.get("/api/client/features", headers={"Authorization": token})
    return token, FlagSet(ClientFeatures.model_validate_json(document.content))


def test_the_python_sdk_gives_the_evaluators_answer_for_10000_users(
    shop: ServerProcess, tmp_path: Path
) -> None:
    token, ours = _search_in_production(shop)
    sdk = UnleashClient(
        url=SCOPED_URL.format(url=shop.url),
        app_name="shop-web",
        environment="production",
        instance_id="test-1",
        custom_headers={"Authorization": token},
        cache_directory=str(tmp_path / "sdk-cache"),
        refresh_interval=1,
        metrics_interval=1,
    )
    sdk.initialize_client()
    try:
        wait_for(lambda: sdk.is_enabled("search", {"userId": "vip-1"}), timeout=30)
        differ = []
        on = 0
        for i in range(USERS):
            context = _user(i)
            theirs = sdk.get_variant("search", context)
            mine = ours.variant("search", Context.from_mapping(context)).as_json()
            on += mine["feature_enabled"]
            if {k: theirs.get(k) for k in mine} != mine:
                differ.append((i, theirs, mine))
        assert differ == []
        assert 5_500 < on < 6_300  # 60% of the 98% not blocked
        # metrics reach the server (the SDK sends them every second)
        db = shop.data / "conveyor.db"
        wait_for(lambda: _counted(db, "search"), timeout=30)
    finally:
        sdk.destroy()


def _counted(db: Path, flag: str) -> bool:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT app_name, counts FROM flag_clients").fetchall()
    return any(
        name == "shop-web" and json.loads(counts).get(flag, {}).get("yes", 0) > 0
        for name, counts in rows
    )


def test_the_router_header_gives_the_evaluators_answer_for_the_same_10000_users(
    shop: ServerProcess, tmp_path: Path
) -> None:
    """The router knows a request's user id alone (its cookie): for the ids the SDKs were
    asked about, its header is the evaluator's answer for that id, and the same variant
    as theirs wherever the rest of their context changes nothing (not plan "blocked")."""
    token, ours = _search_in_production(shop)
    document = shop.http.get("/api/client/features", headers={"Authorization": token})
    features = ClientFeatures.model_validate_json(document.content)
    backend = Backend("r1").start()
    router = EmbeddedRouter(tmp_path / "r.sock", tmp_path / "r.log", workers=1)
    port = free_port()
    try:
        asyncio.run(router.start())
        spec = RouteSpec(
            app="shop",
            port=port,
            bind="127.0.0.1",
            targets=[Target(release="r1", port=backend.port, weight=100)],
            flags=HostFlags(stickiness="cookie:uid", document=features),
        )
        asyncio.run(router.apply(spec))
        # http.client: a third of httpx's time a request, 10,000 of them
        with contextlib.closing(HTTPConnection("127.0.0.1", port, timeout=10)) as conn:

            def header(uid: str) -> str | None:
                conn.request("GET", "/headers", headers={"Cookie": f"uid={uid}"})
                got = json.loads(conn.getresponse().read())
                return {k.lower(): v for k, v in got.items()}.get("x-conveyor-flags")

            wait_for(lambda: header("user-1") is not None, timeout=10, interval=0.1)
            differ, same_as_sdks = [], 0
            for i in range(USERS):
                context = _user(i)
                uid = context["userId"]
                line = header(uid)
                if line != header_value(ours, Context(user_id=uid)):
                    differ.append((uid, line))
                elif i % 50:
                    variant = ours.variant("search", Context.from_mapping(context))
                    said = variant.name if variant.enabled else "off"
                    assert f"search={said}" in (line or "").split("; "), (uid, line, said)
                    same_as_sdks += 1
        assert differ == []
        assert same_as_sdks == USERS - USERS // 50
    finally:
        asyncio.run(router.stop())
        backend.stop()


NODE_SDK = Path(__file__).resolve().parents[2] / "testbed" / "node_sdk"


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_SDK / "node_modules" / "unleash-client").is_dir(),
    reason="the Unleash Node SDK is not installed (`make sync` runs npm ci in testbed/node_sdk)",
)
def test_the_node_sdk_gives_the_evaluators_answer_for_10000_users(shop: ServerProcess) -> None:
    token, ours = _search_in_production(shop)
    done = subprocess.run(
        ["node", "variants.js", SCOPED_URL.format(url=shop.url), token, "search", str(USERS)],
        cwd=NODE_SDK,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    theirs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(theirs) == USERS
    differ = []
    for i, answer in enumerate(theirs):
        mine = ours.variant("search", Context.from_mapping(_user(i)))
        payload = mine.payload.model_dump() if mine.payload else None
        if answer != {"name": mine.name, "enabled": mine.enabled, "payload": payload}:
            differ.append((i, answer, mine))
    assert differ == []
    assert {a["name"] for a in theirs} == {"a", "b", "c", "disabled"}


def test_the_openfeature_provider_gives_the_evaluators_answers(shop: ServerProcess) -> None:
    token, ours = _search_in_production(shop)
    provider = ConveyorProvider(SCOPED_URL.format(url=shop.url), token, interval=0.5)
    api.set_provider_and_wait(provider)  # initialize reads the flags once
    try:
        client = api.get_client()
        details = client.get_boolean_details("search", False, EvaluationContext("vip-1"))
        assert details.value is True, details
        for i in range(2000):
            context = _user(i)
            of_context = EvaluationContext(context["userId"], context["properties"])
            mine = ours.variant("search", Context.from_mapping(context))
            assert client.get_boolean_value("search", False, of_context) is mine.feature_enabled
            expected = mine.name if mine.enabled else "none"
            assert client.get_string_value("search", "none", of_context) == expected
        missing = client.get_boolean_details("nope", True, EvaluationContext("u"))
        assert missing.value is True and missing.error_code == ErrorCode.FLAG_NOT_FOUND
        # the server unreachable: the last flags read keep answering
        provider.url = "http://127.0.0.1:9/api/client/features"
        assert provider.refresh() is False
        assert client.get_string_value("search", "none", EvaluationContext("vip-1")) in "abc"
    finally:
        api.shutdown()


@contextlib.contextmanager
def _signed_in(shop: ServerProcess, role: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shop.url, timeout=30) as http:
        signed = http.post("/login", data={"token": _token(shop, role), "next": "/"})
        assert signed.status_code == 303, signed.text
        yield http


def test_the_dashboard_shows_flags_and_deployers_switch_them(shop: ServerProcess) -> None:
    page = "/apps/shop/environments/staging/flags"
    with _signed_in(shop, "viewer") as viewer:
        shown = viewer.get(page)
        assert shown.status_code == 200 and 'data-flag="new-checkout"' in shown.text
        assert "the one-page checkout" in shown.text and "data-action=" not in shown.text
        refused = viewer.post(page + "/new-checkout/on", data={"csrf": "x"})
        assert refused.status_code >= 400
    with _signed_in(shop, "deployer") as deployer:
        shown = deployer.get(page)
        csrf = re.search(r'name="csrf" value="([^"]+)"', shown.text)
        assert csrf is not None
        before = shop.get(FLAGS.format(env="staging") + "/new-checkout")["state"]["enabled"]
        action = "off" if before else "on"
        done = deployer.post(f"{page}/new-checkout/{action}", data={"csrf": csrf.group(1)})
        assert done.status_code == 303, done.text
    after = shop.get(FLAGS.format(env="staging") + "/new-checkout")
    assert after["state"]["enabled"] is (not before)
    assert after["history"][-1]["by"] == "deployer-person"


def test_a_guarded_rollout_from_the_cli_and_a_person_taking_over(shop: ServerProcess) -> None:
    created = shop.http.post(FLAGS.format(env="staging"), json={"name": "guarded-cli"})
    assert created.status_code == 201, created.text
    bad = shop.cli("flag", "rollout", "shop", "staging", "guarded-cli", "--steps", "50,25")
    assert bad.returncode == 2 and "steps 50,25 do not rise" in bad.stderr, bad.stderr
    path = FLAGS.format(env="staging") + "/guarded-cli"
    _refused(shop.http.post(path + "/rollout", json={"steps": [5], "step_pause": 0}), 422, "1 s")
    assert shop.get(path)["rollout"] is None  # nothing started

    done = shop.cli(
        "flag", "rollout", "shop", "staging", "guarded-cli", "--steps", "5,25,100",
        "--step-pause", "10m",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "on  5%" in done.stdout
    shown = shop.cli("flag", "show", "shop", "staging", "guarded-cli").stdout
    assert "guarded rollout running: step 1 of 3 (5%; steps 5,25,100%, 600 s each)" in shown
    assert "guarded rollout started: steps 5,25,100%" in shown
    # a person's change ends it: they took over
    assert shop.cli("flag", "off", "shop", "staging", "guarded-cli").returncode == 0
    rollout = shop.get(path)["rollout"]
    assert rollout["state"] == "cancelled" and "changed the flag" in rollout["reason"]
