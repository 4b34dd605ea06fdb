"""Command dispatch for manage.py."""
import argparse
import code
import datetime
import glob
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


def preindex_everything(args):
    marker = os.path.join(settings.STATE_DIR, "preindex-in-progress")
    os.makedirs(settings.STATE_DIR, exist_ok=True)
    if args.check:
        # As CommCare HQ: no output while a preindex is still running.
        if not os.path.exists(marker):
            print("preindex_everything: all views and indices are up to date")
        return 0
    open(marker, "w").close()
    try:
        time.sleep(args.seconds)
        with open(os.path.join(settings.STATE_DIR, "preindexed"), "w") as f:
            f.write(revision() + "\n")
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
    s = sub.add_parser("migrate")
    s.add_argument("--noinput", "--no-input", action="store_true")
    s.set_defaults(fn=migrate)
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
