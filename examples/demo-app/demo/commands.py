"""Command dispatch for manage.py."""
import argparse
import code
import datetime
import glob
import hashlib
import http.server
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

from demo import settings


def revision():
    """The git commit this release runs (the release directory is a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def connect():
    os.makedirs(os.path.dirname(settings.DATABASE), exist_ok=True)
    db = sqlite3.connect(settings.DATABASE, timeout=30)
    db.execute("CREATE TABLE IF NOT EXISTS demo_migrations (name TEXT PRIMARY KEY, applied TEXT NOT NULL)")
    return db


def migrate(args):
    db = connect()
    done = {row[0] for row in db.execute("SELECT name FROM demo_migrations")}
    applied = 0
    for path in sorted(glob.glob(os.path.join(settings.BASE_DIR, "migrations", "*.sql"))):
        name = os.path.basename(path)
        if name in done:
            continue
        with open(path) as f:
            db.executescript(f.read())
        db.execute("INSERT INTO demo_migrations VALUES (?, ?)", (name, datetime.datetime.utcnow().isoformat()))
        db.commit()
        print(f"  Applying {name}... OK")
        applied += 1
    if not applied:
        print("No migrations to apply.")
    return 0


def showmigrations(args):
    db = connect()
    done = {row[0] for row in db.execute("SELECT name FROM demo_migrations")}
    for path in sorted(glob.glob(os.path.join(settings.BASE_DIR, "migrations", "*.sql"))):
        name = os.path.basename(path)
        print(f" [{'X' if name in done else ' '}] {name}")
    return 0


def views_digest():
    """What the views of this release are (the demo's stand-in for CouchDB design documents)."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(settings.BASE_DIR, "views", "**", "*"), recursive=True)):
        if os.path.isfile(path):
            h.update(os.path.relpath(path, settings.BASE_DIR).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def preindex_everything(args):
    marker = os.path.join(settings.STATE_DIR, "preindex-in-progress")
    done = os.path.join(settings.STATE_DIR, "preindexed")
    os.makedirs(settings.STATE_DIR, exist_ok=True)
    if args.check:
        # As CommCare HQ: no output while a preindex is still running or still needed.
        current = open(done).read().split() if os.path.exists(done) else []
        if not os.path.exists(marker) and (views_digest() in current or not os.path.isdir(os.path.join(settings.BASE_DIR, "views"))):
            print("preindex_everything: all views and indices are up to date")
        return 0
    open(marker, "w").close()
    try:
        time.sleep(args.seconds)
        with open(done, "w") as f:
            f.write(revision() + " " + views_digest() + "\n")
    finally:
        os.unlink(marker)
    print("preindex_everything: done")
    return 0


def record_deploy_success(args):
    os.makedirs(settings.STATE_DIR, exist_ok=True)
    with open(os.path.join(settings.STATE_DIR, "deploys.log"), "a") as f:
        f.write(json.dumps({"at": datetime.datetime.utcnow().isoformat(), "commit": revision(), "by": args.user}) + "\n")
    print("deploy recorded")
    return 0


def collectstatic(args):
    out = os.path.join(settings.BASE_DIR, "staticfiles")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "version.txt"), "w") as f:
        f.write(revision() + "\n")
    print("1 static file copied")
    return 0


# Stand-ins for the steps of CommCare HQ's deploy (commcare-cloud's deploy_hq.yml): each does a
# small real thing in the release or the shared state, so a deploy of the demo app runs the whole
# `commcare` pipeline.

def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def validate_kafka_pillow_checkpoints(args):
    # The state file `kafka-checkpoints-unsafe` stands for checkpoints Kafka no longer has.
    if os.path.exists(os.path.join(settings.STATE_DIR, "kafka-checkpoints-unsafe")):
        print("Kafka checkpoints for some pillows are not available: they would reprocess from the start")
        return 0 if args.print_only else 1
    print("All pillow checkpoints are safe")
    return 0


def resource_static(args):
    _write(os.path.join(settings.BASE_DIR, "resource_versions.json"), json.dumps({"rev": revision()}) + "\n")
    print("resource versions written")
    return 0


def step_done(name):
    def run(args):
        _write(os.path.join(settings.BASE_DIR, "staticfiles", "steps", name), revision() + "\n")
        print(f"{name}: done")
        return 0
    return run


def update_manifest(args):
    shared = os.path.join(settings.STATE_DIR, "static-manifest.json")
    local = os.path.join(settings.BASE_DIR, "staticfiles", "CACHE", "manifest.json")
    if args.action == "save":
        _write(local, json.dumps({"rev": revision()}) + "\n")
        _write(shared, json.dumps({"rev": revision()}) + "\n")
    else:
        if not os.path.exists(shared):
            # No proxy host ran `compress` (a monolith): nothing to pull.
            print("no manifest saved: nothing to pull")
            return 0
        _write(local, open(shared).read())
    print("manifest saved" if args.action == "save" else "manifest pulled")
    return 0


def compilemessages(args):
    _write(os.path.join(settings.BASE_DIR, "locale", "compiled"), revision() + "\n")
    print("messages compiled")
    return 0


def check_services(args):
    problems = []
    try:
        connect().execute("SELECT 1")
    except sqlite3.Error as e:
        problems.append(f"database: {e}")
    for name, (host, port) in getattr(settings, "SERVICES", {}).items():
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError as e:
            problems.append(f"{name} {host}:{port}: {e}")
    for p in problems:
        print(f"FAIL {p}")
    if not problems:
        print("All services OK")
    return 1 if problems else 0


def check(args):
    print("System check identified no issues (0 silenced).")
    return 0


def shell(args):
    code.interact(banner=f"demo shell ({settings.HQ_INSTANCE}, {revision()[:12]})", local={"settings": settings})
    return 0


class Web(http.server.BaseHTTPRequestHandler):
    rev = "unknown"

    def do_GET(self):  # noqa: N802
        if self.path == "/version":
            body = self.rev
        elif self.path == "/health":
            body = "ok"
        else:
            db = connect()
            db.execute("CREATE TABLE IF NOT EXISTS visits (at TEXT)")
            body = f"Hello from {settings.HQ_INSTANCE} on {settings.DEPLOY_MACHINE_NAME}"
        data = (body + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stdout.write("%s - %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()


def serve(bind, port, handler):
    handler.rev = revision()
    server = http.server.ThreadingHTTPServer((bind, port), handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening on {bind}:{port} ({handler.rev[:12]})", flush=True)
    server.serve_forever()
    return 0


def runweb(args):
    return serve(args.bind, args.port, Web)


def loop(name, args):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"{name} started: {vars(args)} ({revision()[:12]})", flush=True)
    while not stop.wait(1.0):
        pass
    print(f"{name} stopping", flush=True)
    return 0


def main(argv):
    p = argparse.ArgumentParser(prog="manage.py")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("migrate", "migrate_multi"):
        s = sub.add_parser(name)
        s.add_argument("--noinput", "--no-input", action="store_true")
        s.set_defaults(fn=migrate)
    s = sub.add_parser("validate_kafka_pillow_checkpoints")
    s.add_argument("--print-only", action="store_true")
    s.set_defaults(fn=validate_kafka_pillow_checkpoints)
    sub.add_parser("resource_static").set_defaults(fn=resource_static)
    for name in ("fix_less_imports_collectstatic", "generate_webpack_settings", "update_django_locales", "compilejsi18n", "create_kafka_topics"):
        sub.add_parser(name).set_defaults(fn=step_done(name))
    s = sub.add_parser("compress")
    s.add_argument("--force", action="store_true")
    s.add_argument("-v", "--verbosity", default="1")
    s.set_defaults(fn=step_done("compress"))
    s = sub.add_parser("update_manifest")
    s.add_argument("action", choices=["save", "pull"])
    s.set_defaults(fn=update_manifest)
    s = sub.add_parser("compilemessages")
    s.add_argument("-v", "--verbosity", default="1")
    s.set_defaults(fn=compilemessages)
    sub.add_parser("showmigrations").set_defaults(fn=showmigrations)
    s = sub.add_parser("preindex_everything")
    s.add_argument("--check", action="store_true")
    s.add_argument("--mail", action="store_true")
    s.add_argument("--seconds", type=float, default=0.5)
    s.set_defaults(fn=preindex_everything)
    s = sub.add_parser("record_deploy_success")
    s.add_argument("--user", default=os.environ.get("USER", "unknown"))
    s.set_defaults(fn=record_deploy_success)
    s = sub.add_parser("collectstatic")
    s.add_argument("--noinput", "--no-input", action="store_true")
    s.add_argument("-v", "--verbosity", default="1")
    s.set_defaults(fn=collectstatic)
    sub.add_parser("check_services").set_defaults(fn=check_services)
    s = sub.add_parser("check")
    s.add_argument("--deploy", action="store_true")
    s.add_argument("-t", "--tag")
    s.set_defaults(fn=check)
    sub.add_parser("shell").set_defaults(fn=shell)
    s = sub.add_parser("runweb")
    s.add_argument("--bind", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9010)
    s.set_defaults(fn=runweb)
    for name in ("celery", "celerybeat", "flower", "run_ptop"):
        s = sub.add_parser(name)
        s.add_argument("--queues")
        s.add_argument("--concurrency")
        s.add_argument("--hostname")
        s.add_argument("--bind")
        s.add_argument("--port")
        s.add_argument("--pillow-name")
        s.add_argument("--num-processes")
        s.add_argument("--process-number")
        s.set_defaults(fn=(lambda a, n=name: loop(n, a)))
    args = p.parse_args(argv)
    return args.fn(args)
