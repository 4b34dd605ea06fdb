"""Fabric 3 side of the benchmark: one fan-out with ThreadingGroup, host keys checked strictly.

    python fab_bench.py HOSTS_FILE USER KEY KNOWN_HOSTS TASK [--warm ITERATIONS]

HOSTS_FILE holds one address per line. TASK is `hostname` (task 1), `status`
(`sudo supervisorctl status`, task 2) or `restart` (`sudo supervisorctl restart all`, task 3). Fabric auto-adds unknown host keys by default; here
every Connection's paramiko client loads the environment's known_hosts and uses RejectPolicy, so
an unknown or changed key fails the run (as with cchq, Ansible and pyinfra in this benchmark).

Cold (default): connect + run once, print a verification summary; time the whole process from
outside (hyperfine). Warm (--warm N): connect + run once (not timed), then time N more runs over
the open connections and print their wall times (ms) as JSON.
"""

import json
import sys
import time

import paramiko
from fabric import ThreadingGroup


def main():
    hosts_file, user, key, known_hosts, task = sys.argv[1:6]
    warm = int(sys.argv[7]) if len(sys.argv) > 7 and sys.argv[6] == "--warm" else 0
    with open(hosts_file) as f:
        hosts = [h.strip() for h in f if h.strip()]
    group = ThreadingGroup(
        *hosts,
        user=user,
        connect_kwargs={"key_filename": key, "look_for_keys": False, "allow_agent": False},
    )
    for c in group:
        c.client.load_host_keys(known_hosts)
        c.client.set_missing_host_key_policy(paramiko.RejectPolicy())

    def once():
        if task == "hostname":
            return group.run("hostname", hide=True, warn=True)
        if task == "restart":
            return group.sudo("supervisorctl restart all", hide=True, warn=True)
        return group.sudo("supervisorctl status", hide=True, warn=True)

    results = once()
    failed = [c.host for c, r in results.items() if not hasattr(r, "exited") or r.exited != 0]
    if failed:
        print(f"fabric: failed on {len(failed)} host(s): {failed[:5]}", file=sys.stderr)
        sys.exit(1)
    if warm:
        times = []
        for _ in range(warm):
            start = time.perf_counter()
            results = once()
            times.append((time.perf_counter() - start) * 1000.0)
            if any(not hasattr(r, "exited") or r.exited != 0 for r in results.values()):
                print("fabric: a warm run failed", file=sys.stderr)
                sys.exit(1)
        print(json.dumps({"times_ms": times}))
    else:
        for r in results.values():
            sys.stdout.write(r.stdout)
    group.close()


if __name__ == "__main__":
    main()
