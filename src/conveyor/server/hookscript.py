"""The git `post-receive` hook that triggers runs from a bare repository on your own server."""

from __future__ import annotations

HOOK_AGENT = "conveyor-post-receive"

_TEMPLATE = '''#!/usr/bin/env python3
"""conveyor post-receive hook for app {app!r}.

Install: save as hooks/post-receive in the bare repository and `chmod +x` it.
It signs each push to {branch!r} like a GitHub webhook and sends it to the
conveyor server. It never fails the push: the commits are already stored.
For an https:// server whose certificate a private CA signed, set CONVEYOR_CA
to that CA's certificate (PEM) in the environment git runs the hook in.
"""
import getpass
import hashlib
import hmac
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
import uuid

SERVER = {server!r}
APP = {app!r}
BRANCH = {branch!r}
SECRET = {secret!r}


def notify(old, new, ref):
    body = json.dumps(
        {{"ref": ref, "before": old, "after": new, "pusher": {{"name": getpass.getuser()}}}}
    ).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        SERVER.rstrip("/") + "/hooks/github/" + APP,
        data=body,
        method="POST",
        headers={{
            "Content-Type": "application/json",
            "User-Agent": "{agent}",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
        }},
    )
    ca = os.environ.get("CONVEYOR_CA")
    try:
        context = ssl.create_default_context(cafile=ca) if ca else None
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            answer = json.loads(response.read() or b"{{}}")
            print("conveyor: " + str(answer.get("detail", response.status)))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print("conveyor: could not reach " + SERVER + ": " + str(exc), file=sys.stderr)


for line in sys.stdin:
    parts = line.split()
    if len(parts) == 3 and parts[2] == "refs/heads/" + BRANCH:
        notify(*parts)
'''


def hook_script(*, server: str, app: str, branch: str, secret: str) -> str:
    return _TEMPLATE.format(server=server, app=app, branch=branch, secret=secret, agent=HOOK_AGENT)
