"""A real HTTP app with many targets, each with the maintenance flag the `read_only` runbook
drives (`GET|PUT /t/<name>/maintenance` `{"read_only": bool}`), a write probe refused with 423
while read-only, a read probe and a health check. It counts, per target, every PUT that changed
the flag: a remediation that acted twice shows as a count above one per direction."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FlagApp(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.read_only: dict[str, bool] = {}
        # (target, value set) -> how many PUTs changed the flag to that value
        self.changes: Counter[tuple[str, bool]] = Counter()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FlagApp

    def _target(self) -> tuple[str, str]:
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "t":
            return "", ""
        return parts[1], parts[2]

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        target, what = self._target()
        with self.server.lock:
            read_only = self.server.read_only.get(target, False)
        if what == "maintenance":
            self._answer(200, {"read_only": read_only})
        elif what in ("health", "orders"):
            self._answer(200, {"ok": True})
        else:
            self._answer(404, {"error": "no such path"})

    def do_PUT(self) -> None:
        target, what = self._target()
        if what != "maintenance":
            self._answer(404, {"error": "no such path"})
            return
        length = int(self.headers.get("Content-Length", "0"))
        wanted = bool(json.loads(self.rfile.read(length))["read_only"])
        with self.server.lock:
            if self.server.read_only.get(target, False) != wanted:
                self.server.changes[(target, wanted)] += 1
            self.server.read_only[target] = wanted
        self._answer(200, {"read_only": wanted})

    def do_POST(self) -> None:  # the write probe
        target, what = self._target()
        with self.server.lock:
            read_only = self.server.read_only.get(target, False)
        if what != "orders":
            self._answer(404, {"error": "no such path"})
        else:
            self._answer(423 if read_only else 201, {"read_only": read_only})

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def flag_app() -> Iterator[FlagApp]:
    app = FlagApp()
    thread = threading.Thread(target=app.serve_forever, daemon=True)
    thread.start()
    try:
        yield app
    finally:
        app.shutdown()
        app.server_close()
