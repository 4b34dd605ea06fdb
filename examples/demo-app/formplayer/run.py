#!/usr/bin/env python3
"""Stand-in for formplayer (a Java service in CommCare HQ): serves /version and reads its
application.properties, as the real one does."""
import argparse
import http.server
import os
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
    p.add_argument("--config", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "application.properties"))
    args = p.parse_args()
    props = load_properties(args.config)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = (props.get("build.version", "dev") if self.path == "/version" else "formplayer ok") + "\n"
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
