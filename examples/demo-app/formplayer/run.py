#!/usr/bin/env python3
"""Stand-in for formplayer (a Java service in CommCare HQ), built into a "jar" (a zipapp) by
make-formplayer-jar: reads its application.properties (in the release it runs from, its working
directory) as the real one does, and serves /version (the commit it was built from, from its
build-info.properties) and /properties (what it read)."""
import argparse
import http.server
import json
import os
import pkgutil
import signal
import threading


def load_properties(path):
    props = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    props[k.strip()] = v.strip()
    return props


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--config", default="application.properties")
    args = p.parse_args()
    props = load_properties(args.config)
    try:
        info = pkgutil.get_data("__main__", "build-info.properties").decode()
        commit = dict(line.split("=", 1) for line in info.splitlines() if "=" in line)["git.commit.id"]
    except (OSError, KeyError, ValueError, AttributeError):
        commit = props.get("build.version", "dev")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/version":
                body = commit + "\n"
            elif self.path == "/properties":
                body = json.dumps(props, sort_keys=True) + "\n"
            else:
                body = "formplayer ok\n"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer((args.bind, args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"formplayer listening on {args.bind}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
