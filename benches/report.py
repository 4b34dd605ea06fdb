"""Turns one benches/run results directory into BENCHMARKS.md (printed on stdout).

    python report.py RESULTS_DIR TASKS
    python report.py --section NAME REPORT BENCHMARKS.md    (one run's report as a section)
    python report.py --carry-sections OLD NEW                (keep OLD's sections in NEW)

Reads meta.json, figures.jsonl (hyperfine exports hf-*.json and in-process timings),
warm-<N>.json, memory.jsonl, profile.jsonl, size-<N>.json, verify.jsonl and appends
benches/analysis.md (the hand-written reading of the numbers) when present.
"""

import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

TOOLS = [
    ("cchq", "cchq CLI (cold: opens its masters each run)"),
    ("cchq-kept", "cchq CLI, masters kept from its previous run (`cchq_ssh_control_persist: 60s`, like Ansible's ControlPersist)"),
    ("cchq-warm", "cchq warm (benches/warm: connections open, cchq-core fan-out)"),
    ("floor", "floor cold: `xargs -P N ssh` (new connections)"),
    ("floor-warm", "floor warm: `xargs -P N ssh` over open ControlMasters"),
    ("ansible", "Ansible ad-hoc, cold (its masters closed before each run)"),
    ("ansible-warm", "Ansible ad-hoc, warm (ControlPersist masters from the previous run)"),
    ("pyinfra", "pyinfra exec (cold)"),
    ("fabric", "Fabric 3 ThreadingGroup (cold: one process per run)"),
    ("fabric-warm", "Fabric 3 warm (in-process, connections open)"),
    ("cchq:rolling", "cchq deploy with its default rolling, health-checked web restart (task 5)"),
    ("cchq:resume-noop", "cchq `deploy --resume` of the finished release (task 5: nothing to do)"),
    ("cchq-kept:resume-noop", "cchq `deploy --resume` of the finished release, masters kept from the previous run (task 5)"),
    ("cchq:floor-steps", "cchq deploy doing the floor's steps only (the profile's other steps removed in cchq.yml; task 5)"),
]
TASK_NAMES = {
    1: "Task 1: `hostname` on every host",
    2: "Task 2: supervisor status of the app programs (every app host)",
    3: "Task 3: restart every app program on every app host (cchq `service commcare restart --all-at-once`; "
    "peers `supervisorctl restart all`)",
    4: "Task 4: render and push `localsettings.py` to every web/celery/pillowtop host, changed each run "
    "(cchq `update-config --yes`; Ansible `template` module)",
    5: "Task 5: full deploy of the demo app to every commcare host (cchq `deploy --all-at-once`; Ansible "
    "`benches/deploy/deploy.yml`; floor `benches/deploy/floor` over open masters)",
    6: "Task 6: redeploy of a plain Django project (`django-admin startproject`), nothing changed, to every host "
    "(cchq `deploy --all-at-once` with `profile: django`; Ansible `benches/deploy/django.yml`; floor "
    "`benches/deploy/django-floor` — checkout, switch, restart — over open masters)",
}
LATER = {}
LATER_WHY = {}


def lines(path):
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def load(res):
    meta = json.load(open(os.path.join(res, "meta.json")))
    figs = {}
    for fig in lines(os.path.join(res, "figures.jsonl")):
        key = (fig["size"], fig["task"], fig["tool"])
        if "hyperfine" in fig:
            r = json.load(open(os.path.join(res, fig["hyperfine"])))["results"][0]
            times = [t * 1000.0 for t in r["times"]]
            fig = dict(fig, times_ms=times, user_ms=r.get("user", 0) * 1000.0, system_ms=r.get("system", 0) * 1000.0)
        figs[key] = fig
    sizes = {}
    for name in os.listdir(res):
        if name.startswith("size-") and name.endswith(".json"):
            d = {}
            for obj in lines(os.path.join(res, name)):
                d.update(obj)
            sizes[d["size"]] = d
    warm = {}
    for n in sizes:
        p = os.path.join(res, f"warm-{n}.json")
        if os.path.exists(p) and os.path.getsize(p):
            warm[n] = json.load(open(p))
    mem = {(m["size"], m["task"]): m["cchq_cli_max_rss_kib"] for m in lines(os.path.join(res, "memory.jsonl"))}
    prof = {p["size"]: p["host_side"] for p in lines(os.path.join(res, "profile.jsonl"))}
    verify = lines(os.path.join(res, "verify.jsonl"))
    # verify-recheck.jsonl: re-counts of saved outputs (e.g. after fixing a counting pattern).
    recheck = {(r["size"], r["task"], r["tool"]): r for r in lines(os.path.join(res, "verify-recheck.jsonl"))}
    verify = [recheck.get((x["size"], x["task"], x["tool"]), x) for x in verify]
    warnings = lines(os.path.join(res, "warnings.jsonl"))
    trips = {(r["size"], r["tool"]): r for r in lines(os.path.join(res, "round_trips.jsonl"))}
    return meta, figs, sizes, warm, mem, prof, verify, warnings, trips


def med(fig):
    return statistics.median(fig["times_ms"]) if fig and fig.get("times_ms") else None


def fmt_s(ms):
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.2f} s"


def cell(fig):
    if fig is None:
        return "not run"
    if "skipped" in fig:
        return "skipped (--skip)"
    if "failed" in fig:
        return "FAILED"
    t = fig["times_ms"]
    return f"{fmt_s(statistics.median(t))} [{fmt_s(min(t))}–{fmt_s(max(t))}]"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_r(r):
    return "–" if r is None else f"{r:.2f}×"


def section(name, src, dest):
    """Puts report `src` into `dest` as the section `name` (between `<!-- section NAME -->` and
    `<!-- end section NAME -->`), its headings one level down: replaces that section, or appends
    it; the rest of `dest` is left as it is."""
    body = open(src).read().rstrip("\n")
    body = "\n".join(("#" + l) if l.startswith("#") else l for l in body.splitlines())
    body = body.replace("## cchq benchmarks", f"## Section `{name}` (a run of its own)", 1)
    start, end = f"<!-- section {name} -->", f"<!-- end section {name} -->"
    block = f"{start}\n{body}\n{end}"
    text = open(dest).read() if os.path.exists(dest) else ""
    if start in text and end in text:
        a, b = text.index(start), text.index(end) + len(end)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    open(dest, "w").write(text)


def carry_sections(old, new):
    """Appends to `new` every section of `old` that `new` does not have (a full run keeps the
    sections of separate runs)."""
    if not os.path.exists(old):
        return
    text, mine = open(old).read(), open(new).read()
    import re
    for m in re.finditer(r"<!-- section (\S+) -->.*?<!-- end section \1 -->", text, re.S):
        if f"<!-- section {m.group(1)} -->" not in mine:
            mine = mine.rstrip("\n") + "\n\n" + m.group(0) + "\n"
    open(new, "w").write(mine)


def main():
    if sys.argv[1] == "--section":
        section(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    if sys.argv[1] == "--carry-sections":
        carry_sections(sys.argv[2], sys.argv[3])
        return
    res, tasks = sys.argv[1], [int(t) for t in sys.argv[2].split(",")]
    meta, figs, sizes, warm, mem, prof, verify, warnings, trips = load(res)
    ns = sorted(sizes)
    out = []
    w = out.append
    w("# cchq benchmarks\n")
    w("cchq next to Ansible, pyinfra, Fabric and plain OpenSSH (the floor) on the fleet test bed "
      "(`tests/fleet`: real sshd hosts on 127.0.0.11.., each in its own namespaces), same run, same machine. "
      "Generated by `benches/run` (see `benches/README.md`); summary in "
      f"`benches/results/{os.path.basename(res.rstrip('/'))}.json` (summary; raw output is not committed).\n")
    w("## The run\n")
    v = meta["versions"]
    w(f"- command: `{meta['command']}`")
    w(f"- date: {meta['date_utc']}")
    w(f"- machine: {meta['nproc']} cores, {meta['cpu']}, {meta['mem_gib']} GiB, Linux {meta['kernel']}")
    w(f"- load average before the run: {' '.join(meta['loadavg_before'])}"
      + "".join(f"; before `up {n}`: {sizes[n].get('loadavg_before_up', '?')}" for n in ns))
    w(f"- cchq: {v.get('cchq', '?')} built from {meta['built_from']} at `{meta['git_head'][:12]}`"
      f"{' (working tree had uncommitted changes, not in the build)' if meta['worktree_dirty'] and meta['built_from'] != 'working tree' else ''}"
      ", release profile")
    w(f"- peers: ansible-core {v.get('ansible-core')}, pyinfra {v.get('pyinfra')}, fabric {v.get('fabric')} "
      f"(paramiko {v.get('paramiko')}), {v.get('python')}; {v.get('openssh')}; {v.get('hyperfine')}")
    w("- sizes: " + ", ".join(f"{n} hosts ({sizes[n].get('app_hosts', '?')} app hosts, {sizes[n].get('programs', '?')} programs)" for n in ns))
    runs = sorted({len(f["times_ms"]) for f in figs.values() if f.get("times_ms")})
    w(f"- each figure: median [min–max] of {'/'.join(map(str, runs))} timed runs (hyperfine, one warm-up run "
      "except Ansible cold, whose runs each start with its masters closed; in-process loops for the warm figures)")
    if warnings:
        w(f"- WARNING: {warnings}")
    bad = [x for x in verify if x["verify_got"] < x["verify_expected"]]
    w(f"- output checked once per tool, task and size before timing: {len(verify) - len(bad)}/{len(verify)} correct"
      + (f"; wrong: {bad}" if bad else "")
      + "".join(f"; {r['size']}/{r['task']}/{r['tool']} re-counted: {r['note']}" for r in verify if r.get("note")))
    w("")

    w("## Absolute times\n")
    w("Cold = a one-shot CLI run making new connections (every tool's default); warm = connections already open.\n")
    for t in tasks:
        w(f"### {TASK_NAMES[t]}\n")
        w("| tool | " + " | ".join(f"{n} hosts" for n in ns) + " |")
        w("|---|" + "---|" * len(ns))
        for tool, desc in TOOLS:
            if not any((n, t, tool) in figs for n in ns):
                continue
            w(f"| {desc} | " + " | ".join(cell(figs.get((n, t, tool))) for n in ns) + " |")
        w("")
    for t in LATER:
        w(f"### {LATER[t]}\n")
        w("| tool | all sizes |\n|---|---|")
        w(f"| every tool | {LATER_WHY[t]} |\n")

    if trips:
        w("### Round trips of the deploy per phase (task 5)\n")
        w("Counted by cchq's transport (every command and file transfer on a host), from one `deploy --json` "
          "(and one no-op `deploy --resume`) per size: the most round trips one host had in the phase "
          "(`max/host`), and the sum over every host (`total`).\n")
        for tool in ("cchq", "cchq:floor-steps", "cchq:resume-noop"):
            sizes_t = [n for n in ns if (n, tool) in trips]
            if not sizes_t:
                continue
            phases = []
            for n in sizes_t:
                for p in trips[(n, tool)]["round_trips"]:
                    if p["phase"] not in phases:
                        phases.append(p["phase"])
            w(f"`{tool}`:\n")
            w("| phase | " + " | ".join(f"{n} hosts: max/host, total" for n in sizes_t) + " |")
            w("|---|" + "---|" * len(sizes_t))
            for ph in phases:
                cells = []
                for n in sizes_t:
                    p = next((p for p in trips[(n, tool)]["round_trips"] if p["phase"] == ph), None)
                    cells.append("–" if p is None else f"{p['max_per_host']}, {p['total']}")
                w(f"| {ph} | " + " | ".join(cells) + " |")
            per_host = []
            for n in sizes_t:
                rt = trips[(n, tool)]["round_trips"]
                per_host.append(str(sum(p["max_per_host"] for p in rt)))
            w("| **every phase (max/host summed)** | " + " | ".join(per_host) + " |")
            w("")

    w("## Ratios (medians)\n")
    w("`tool/cchq`: cold tools against the cchq CLI, warm tools against cchq warm (> 1: cchq is faster). "
      "`cchq/floor`: the cchq CLI against the cold floor, cchq warm against the warm floor (1 = as fast as plain ssh).\n")
    for t in tasks:
        w(f"### {TASK_NAMES[t]}\n")
        w("| ratio | " + " | ".join(f"{n} hosts" for n in ns) + " |")
        w("|---|" + "---|" * len(ns))
        for tool, _ in TOOLS:
            if tool.startswith(("cchq", "floor")) or not any((n, t, tool) in figs for n in ns):
                continue
            base = "cchq-warm" if tool.endswith("-warm") else "cchq"
            w(f"| {tool} / {base} | " + " | ".join(fmt_r(ratio(med(figs.get((n, t, tool))), med(figs.get((n, t, base))))) for n in ns) + " |")
        if any((n, t, "cchq-kept") in figs for n in ns):
            for peer in ("ansible-warm", "pyinfra"):
                w(f"| {peer} / cchq-kept (cchq keeping its masters between runs) | "
                  + " | ".join(fmt_r(ratio(med(figs.get((n, t, peer))), med(figs.get((n, t, "cchq-kept"))))) for n in ns) + " |")
            w("| cchq-kept / floor-warm | " + " | ".join(fmt_r(ratio(med(figs.get((n, t, "cchq-kept"))), med(figs.get((n, t, "floor-warm"))))) for n in ns) + " |")
        w("| ansible-warm / cchq (Ansible's best against a cold cchq CLI) | "
          + " | ".join(fmt_r(ratio(med(figs.get((n, t, "ansible-warm"))), med(figs.get((n, t, "cchq"))))) for n in ns) + " |")
        w("| cchq / floor | " + " | ".join(fmt_r(ratio(med(figs.get((n, t, "cchq"))), med(figs.get((n, t, "floor"))))) for n in ns) + " |")
        w("| cchq-warm / floor-warm | " + " | ".join(fmt_r(ratio(med(figs.get((n, t, "cchq-warm"))), med(figs.get((n, t, "floor-warm"))))) for n in ns) + " |")
        if t >= 3:
            w("| cchq (cold CLI) / floor-warm | " + " | ".join(fmt_r(ratio(med(figs.get((n, t, "cchq"))), med(figs.get((n, t, "floor-warm"))))) for n in ns) + " |")
        w("")

    w("## Controller CPU (hyperfine user+system of the process tree, median run)\n")
    w("| task | tool | " + " | ".join(f"{n} hosts" for n in ns) + " |")
    w("|---|---|" + "---|" * len(ns))
    for t in tasks:
        for tool in ("cchq", "floor", "ansible", "pyinfra", "fabric"):
            row = []
            for n in ns:
                f = figs.get((n, t, tool))
                row.append(fmt_s(f["user_ms"] + f["system_ms"]) if f and "user_ms" in f else "–")
            w(f"| {t} | {tool} | " + " | ".join(row) + " |")
    w("\n(ssh processes that daemonize, such as ControlMasters, are not children and are not counted; the "
      "hosts' sshd, sudo and supervisorctl run on the same cores and are not counted either.)\n")

    w("## Memory of the controller\n")
    w("| size | cchq CLI peak RSS (task 1 / task 2, GNU time) | cchq warm: own RSS | ssh masters: count, RSS sum, PSS sum | per connected host (own RSS + masters PSS) / (own RSS + masters RSS) |")
    w("|---|---|---|---|---|")
    for n in ns:
        m = warm.get(n, {}).get("memory")
        cli = f"{mem.get((n, 1), 0) / 1024:.1f} MiB / {mem.get((n, 2), 0) / 1024:.1f} MiB"
        if m:
            hosts = warm[n]["hosts"]
            per_pss = (m["self_rss_kib"] + m["ssh_masters_pss_kib"]) / hosts / 1024
            per_rss = (m["self_rss_kib"] + m["ssh_masters_rss_kib"]) / hosts / 1024
            w(f"| {n} | {cli} | {m['self_rss_kib'] / 1024:.1f} MiB | {m['ssh_masters']}, {m['ssh_masters_rss_kib'] / 1024:.0f} MiB, "
              f"{m['ssh_masters_pss_kib'] / 1024:.0f} MiB | {per_pss:.2f} MiB / {per_rss:.2f} MiB |")
        else:
            w(f"| {n} | {cli} | – | – | – |")
    w("\nThe CLI's figure is the cchq process alone (GNU time reports the largest of the process and its waited-for "
      "children; the ControlMasters it starts daemonize). The warm figures count every `ssh -M` process cchq started.\n")

    if 2 in tasks:
        w("## Profile: where task 2's time goes\n")
        w("Fan-outs over the open ControlMasters (the warm floor) to every app host, with the status command varied:\n")
        w("| command on each app host | " + " | ".join(f"{n} hosts" for n in ns) + " |")
        w("|---|" + "---|" * len(ns))
        for tool, desc in (
            ("floor-warm", "`curl --unix-socket` XML-RPC multicall `getAllProcessInfo` (what cchq sends)"),
            ("floor-warm:supervisorctl", "`sudo -n supervisorctl status` (what Ansible, pyinfra and Fabric run)"),
            ("floor-warm:sudo-true", "`sudo -n true` (ssh channel + sudo, no status)"),
            ("floor-warm:xmlrpc-python-S", "`python3 -S` XML-RPC `getAllProcessInfo` on the socket (`benches/xmlrpc_status.py`)"),
        ):
            w(f"| {desc} | " + " | ".join(cell(figs.get((n, 2, tool))) for n in ns) + " |")
        w("\nOne call measured inside an app host (GNU time, median of 5; wall / CPU):\n")
        w("| size | " + " | ".join(["`supervisorctl status`", "XML-RPC with `python3 -S`", "`sudo true`"]) + " |")
        w("|---|---|---|---|")
        for n in ns:
            p = prof.get(n, {})
            w(f"| {n} | " + " | ".join(
                f"{p[k]['wall_s'] * 1000:.0f} ms / {p[k]['cpu_s'] * 1000:.0f} ms" if k in p else "–"
                for k in ("supervisorctl", "xmlrpc-python-S", "sudo-true")) + " |")
        w("")
    if any(k[2] == "cchq:connect-concurrency-256" for k in figs):
        w("## Profile: cchq's cold start\n")
        w("The same `run-shell-command all hostname` with `cchq_ssh_connect_concurrency: 256` in a copy of the "
          "environment (default: 16 connection starts at once):\n")
        w("| variant | " + " | ".join(f"{n} hosts" for n in ns) + " |")
        w("|---|" + "---|" * len(ns))
        w("| default (16) | " + " | ".join(cell(figs.get((n, 1, "cchq"))) for n in ns) + " |")
        w("| 256 | " + " | ".join(cell(figs.get((n, 1, "cchq:connect-concurrency-256"))) for n in ns) + " |")
        w("| floor cold (`xargs -P N ssh`) | " + " | ".join(cell(figs.get((n, 1, "floor"))) for n in ns) + " |")
        w("| cchq warm connect (first exec on every host, in-process) | "
          + " | ".join(fmt_s(warm.get(n, {}).get("connect_ms")) for n in ns) + " |")
        w("")

    w("## Targets\n")
    w("| target | measured | met? |\n|---|---|---|")

    def verdict(ok):
        return "–" if ok is None else ("yes" if ok else "**no**")

    for t in [t for t in tasks if t in (1, 2)]:
        rs = [(n, ratio(med(figs.get((n, t, "cchq-warm"))), med(figs.get((n, t, "floor-warm"))))) for n in ns]
        rs = [(n, r) for n, r in rs if r is not None]
        what = "warm fan-out" if t == 1 else "warm service status"
        w(f"| {what} within 1.5× of the floor (task {t}) | " + ", ".join(f"{n}: {r:.2f}×" for n, r in rs)
          + f" | {verdict(all(r <= 1.5 for _, r in rs) if rs else None)} |")
    for peer, goal in (("ansible", 10), ("pyinfra", 2)):
        for t in [t for t in tasks if t <= 4]:
            rs = [(n, ratio(med(figs.get((n, t, peer))), med(figs.get((n, t, "cchq"))))) for n in ns if n >= 50]
            rs = [(n, r) for n, r in rs if r is not None]
            w(f"| ≥ {goal}× faster than {peer} at 50+ hosts, task {t} (cold vs cold) | " + ", ".join(f"{n}: {r:.1f}×" for n, r in rs)
              + f" | {verdict(all(r >= goal for _, r in rs) if rs else None)} |")
            # Both keeping their connections between runs (Ansible's ControlPersist default,
            # cchq_ssh_control_persist); pyinfra keeps none, so its cold run is its every run.
            mine, theirs = "cchq-kept", ("ansible-warm" if peer == "ansible" else peer)
            rs = [(n, ratio(med(figs.get((n, t, theirs))), med(figs.get((n, t, mine))))) for n in ns if n >= 50]
            rs = [(n, r) for n, r in rs if r is not None]
            if rs:
                w(f"| ≥ {goal}× faster than {peer} at 50+ hosts, task {t} ({theirs} vs cchq-kept: every run after the first) | "
                  + ", ".join(f"{n}: {r:.1f}×" for n, r in rs) + f" | {verdict(all(r >= goal for _, r in rs))} |")
    if 2 in tasks:
        big = [n for n in ns if n > 50]
        if 50 in ns and big:
            hi = max(big)
            for tool in ("cchq", "cchq-kept", "cchq-warm", "floor-warm"):
                a, b = med(figs.get((50, 2, tool))), med(figs.get((hi, 2, tool)))
                if a is not None and b is not None:
                    slope = (b - a) / (hi - 50)
                    w(f"| task 2 slope under 5 ms per additional host, 50→{hi} ({tool}) | {slope:.1f} ms/host | "
                      f"{verdict(slope < 5) if tool.startswith('cchq') else '(reference)'} |")
        else:
            w("| task 2 slope under 5 ms per additional host, 50→200 | needs sizes 50 and >50 in one run | – |")
    if 5 in tasks:
        rs = [(n, ratio(med(figs.get((n, 5, "cchq"))), med(figs.get((n, 5, "floor-warm"))))) for n in ns]
        rs = [(n, r) for n, r in rs if r is not None]
        w("| full deploy within 1.2× of its floor (cchq cold CLI vs the floor over open masters) | "
          + ", ".join(f"{n}: {r:.2f}×" for n, r in rs) + f" | {verdict(all(r <= 1.2 for _, r in rs) if rs else None)} |")
        rs = [(n, ratio(med(figs.get((n, 5, "cchq-kept"))), med(figs.get((n, 5, "floor-warm"))))) for n in ns]
        rs = [(n, r) for n, r in rs if r is not None]
        if rs:
            w("| full deploy within 1.2× of its floor, like for like (cchq with its masters kept, the default, vs the floor over open masters) | "
              + ", ".join(f"{n}: {r:.2f}×" for n, r in rs) + f" | {verdict(all(r <= 1.2 for _, r in rs))} |")
        rs = [(n, ratio(med(figs.get((n, 5, "ansible"))), med(figs.get((n, 5, "cchq"))))) for n in ns]
        rs = [(n, r) for n, r in rs if r is not None]
        w("| full deploy ≥ 6× faster than the Ansible playbook | " + ", ".join(f"{n}: {r:.1f}×" for n, r in rs)
          + f" | {verdict(all(r >= 6 for _, r in rs) if rs else None)} |")
        rs = [(n, med(figs.get((n, 5, "cchq:resume-noop")))) for n in ns]
        rs = [(n, r) for n, r in rs if r is not None]
        w("| no-op `deploy --resume` of a finished release under 2 s | " + ", ".join(f"{n}: {fmt_s(r)}" for n, r in rs)
          + f" | {verdict(all(r < 2000 for _, r in rs) if rs else None)} |")
    if 6 in tasks:
        rs = [(n, ratio(med(figs.get((n, 6, "cchq"))), med(figs.get((n, 6, "floor-warm"))))) for n in ns]
        rs = [(n, r) for n, r in rs if r is not None]
        w("| Django redeploy (nothing changed) within 1.5× of its floor (cchq cold CLI vs checkout + switch + restart over open masters) | "
          + ", ".join(f"{n}: {r:.2f}×" for n, r in rs) + f" | {verdict(all(r <= 1.5 for _, r in rs) if rs else None)} |")
        for peer in ("ansible", "ansible-warm"):
            rs = [(n, ratio(med(figs.get((n, 6, peer))), med(figs.get((n, 6, "cchq"))))) for n in ns]
            rs = [(n, r) for n, r in rs if r is not None]
            w(f"| Django redeploy ≥ 5× faster than the Ansible playbook ({peer}) | " + ", ".join(f"{n}: {r:.1f}×" for n, r in rs)
              + f" | {verdict(all(r >= 5 for _, r in rs) if rs else None)} |")
        firsts = [(n, sizes[n].get("t6_first_deploy_s")) for n in ns if sizes[n].get("t6_first_deploy_s") is not None]
        if firsts:
            w("| (for reference) the first Django deploy, untimed by hyperfine: virtualenvs built, static files collected | "
              + ", ".join(f"{n}: {s} s" for n, s in firsts) + " | – |")
    for n in ns:
        m = warm.get(n, {}).get("memory")
        if m and n == max(ns):
            per_pss = (m["self_rss_kib"] + m["ssh_masters_pss_kib"]) / warm[n]["hosts"] / 1024
            per_rss = (m["self_rss_kib"] + m["ssh_masters_rss_kib"]) / warm[n]["hosts"] / 1024
            w(f"| controller memory under 2 MB per connected host ({n} hosts) | {per_pss * 1.048576:.2f} MB (PSS) / "
              f"{per_rss * 1.048576:.2f} MB (RSS) | {verdict(per_pss * 1.048576 < 2)} (PSS), {verdict(per_rss * 1.048576 < 2)} (RSS) |")
    w("")
    analysis = os.path.join(HERE, "analysis.md")
    # A run published as a section (--section) carries no analysis: that belongs to the full run.
    if os.path.exists(analysis) and not os.environ.get("CCHQ_BENCH_SECTION"):
        w(open(analysis).read())
    print("\n".join(out))


if __name__ == "__main__":
    main()
