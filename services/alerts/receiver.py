"""A local webhook receiver that verifies every request with the `standardwebhooks` package, as a
customer's endpoint would: used by the alert-quality benchmark and the delivery tests."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """Listens on 127.0.0.1; answers 204 to verified requests, 400 to the rest; can stop and restart."""

    def __init__(self, secret: str, port: int | None = None) -> None:
        self.wh = Webhook(secret)
        self.port = port or free_port()
        self.ok: list[dict[str, Any]] = []  # verified requests answered 2xx
        self.raw: list[tuple[dict[str, str], bytes]] = []
        self.bad = 0
        self.server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = dict(self.headers.items())
                try:
                    payload = outer.wh.verify(body, headers)
                except WebhookVerificationError:
                    with outer._lock:
                        outer.raw.append((headers, body))
                        outer.bad += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                with outer._lock:
                    outer.raw.append((headers, body))
                    outer.ok.append({"id": headers["webhook-id"], "payload": payload})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"
