"""A stand-in for a vLLM backend (vLLM itself is tested in the serving scenarios): it answers
/health and /v1/models like vLLM, and echoes every POST so tests can see what the router sent.

TCP_NODELAY is set on every connection: without it, Nagle plus delayed ACKs add about 40 ms to
each small SSE write through any proxy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StubBackend:
    def __init__(self, key: str, served_name: str) -> None:
        self.key = key
        self.served_name = served_name
        self.ready = True
        # The next this many /health requests are answered after health_delay seconds, as a
        # backend busy with a full batch would; slow_health_seen counts them.
        self.slow_health = 0
        self.health_delay = 0.0
        self.slow_health_seen = 0
        self.requests: list[dict[str, Any]] = []
        self.aborted_streams = 0
        self._connections: set[socket.socket] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> StubBackend:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection, as a killed process would."""
        self._server.shutdown()
        self._server.server_close()
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def restart(self) -> None:
        """Listen again on the same port after stop()."""
        handler = self._handler()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                backend._connections.add(self.connection)

            def finish(self) -> None:
                backend._connections.discard(self.connection)
                super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/health":
                    if backend.slow_health > 0:
                        backend.slow_health -= 1
                        backend.slow_health_seen += 1
                        time.sleep(backend.health_delay)
                    # After a slow answer the router may have given up and closed the connection.
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self._send(200 if backend.ready else 503, b"")
                elif self.path == "/v1/models":
                    # The root path has slashes: the router must pass them through unescaped.
                    listing = {
                        "object": "list",
                        "data": [
                            {
                                "id": backend.served_name,
                                "object": "model",
                                "owned_by": "vllm",
                                "root": f"/models/{backend.key}",
                                "permission": [],
                            }
                        ],
                    }
                    self._send(200, json.dumps(listing, separators=(",", ":")).encode())
                else:
                    self._send(404, b'{"detail":"Not Found"}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = {}
                seen = {
                    "backend": backend.key,
                    "path": self.path,
                    "length": len(body),
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "request_id": self.headers.get("X-Request-Id"),
                }
                backend.requests.append(seen)
                if isinstance(parsed, dict) and parsed.get("stream"):
                    self._stream(int(parsed.get("events", 3)), float(parsed.get("gap", 0.2)))
                else:
                    self._send(200, json.dumps(seen).encode())

            def _stream(self, events: int, gap: float) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for i in range(events):
                        data = f"data: {json.dumps({'backend': backend.key, 'index': i})}\n\n".encode()
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                        time.sleep(gap)
                    done = b"data: [DONE]\n\n"
                    self.wfile.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    backend.aborted_streams += 1
                    self.close_connection = True

        return Handler
