"""Deploy the demo app and roll it back, from Python (`pip install ./cchq-py`).

    python3 examples/deploy_and_rollback.py /tmp/cchq-fleet/environments fleet
"""

from __future__ import annotations

import sys
from typing import Any

import cchq


def progress(event: dict[str, Any]) -> None:
    if event["event"] == "phase" and event["ok"] is not None:
        print(f"  {event['phase']:<22} {'ok' if event['ok'] else 'FAILED'} ({event['duration_ms']} ms)")


def main(root: str, name: str) -> int:
    env = cchq.Environment.load(name, root)
    try:
        new = env.deploy(on_event=progress)
    except cchq.DeployFailedError as e:
        print(f"deploy failed: {e}")
        return 1
    except cchq.LockHeldError as e:
        print(f"someone else is deploying: {e}")
        return 1
    print(f"deployed {new['release']} ({new['commit'][:12]}) to {len(new['hosts'])} hosts")
    back = env.rollback(on_event=progress)
    print(f"rolled back to {back['release']} ({back['commit'][:12]})")
    for r in env.list_releases():
        print(f"  {r['host']:<10} {r['name']}  {'current' if r['current'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
