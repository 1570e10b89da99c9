"""What the CLI prints of a pull request's run."""

from __future__ import annotations

from conveyor.protocol import RunOut


def pull_request_lines(run: RunOut) -> list[str]:
    """What a pull request's run says of its request and of the statuses its forge got."""
    pull = run.pull_request
    if pull is None:
        return []
    tested = f", tested {pull.tested_sha[:12]}" if pull.tested_sha else ""
    lines = [
        f"pull request #{pull.number} ({pull.forge} {pull.project}) at {pull.head_sha[:12]}"
        f"{tested}: tests only, no release"
    ]
    for status in pull.statuses:
        line = f"  commit status {status.state}: {status.outcome}"
        if status.error:
            line += f" ({status.error})"
        lines.append(line)
    return lines
