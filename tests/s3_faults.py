"""A fault layer between the pipeline and the moto S3 server: an HTTP proxy on 127.0.0.1 that
forwards every request and, where a rule matches, answers 503 instead, drops the connection
(a TCP reset, before or after the upstream applied the request), cuts a response body short, or
stalls before answering. S3 clients reach it through AWS_ENDPOINT_URL like any endpoint; the
Host header is forwarded unchanged (moto does not check signatures).

Rules are matched in order on (method, bucket/key path); each fires on every `every`-th match,
at most `times` times, and counts what it injected, so a test can report the faults seen."""
from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("503", "reset", "reset-after", "truncate", "stall")
_SERVICE_UNAVAILABLE = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
                        b"<Message>injected by the test's fault proxy</Message></Error>")


@dataclass
class Rule:
    kind: str                      # one of KINDS
    method: str | None = None      # e.g. "PUT"; None: any
    path_contains: str = ""        # substring of "/bucket/key?query"
    every: int = 1                 # fire on every n-th matching request
    times: int | None = None       # at most this many times (None: for as long as the rule stays)
    stall_s: float = 0.0
    seen: int = 0
    fired: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r}; expected one of {KINDS}")

    def fires(self, method: str, path: str) -> bool:
        if (self.method and method != self.method) or self.path_contains not in path:
            return False
        self.seen += 1
        if (self.times is not None and self.fired >= self.times) or self.seen % self.every:
            return False
        self.fired += 1
        return True


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    requests: int = 0
    log: list[tuple[str, str, str]] = field(default_factory=list)   # (kind, method, path) of each fault

    def __post_init__(self):
        self._lock = threading.Lock()
        up = urlsplit(self.upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while (size := int(self.rfile.readline().split(b";")[0], 16)):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends a TCP RST, as a crashed server or a load balancer would
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _handle(self) -> None:
                body = self._body()
                with proxy._lock:
                    proxy.requests += 1
                    rule = next((r for r in proxy.rules if r.fires(self.command, self.path)), None)
                    if rule:
                        proxy.log.append((rule.kind, self.command, self.path))
                kind = rule.kind if rule else None
                if kind == "503":
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SERVICE_UNAVAILABLE)))
                    self.end_headers()
                    self.wfile.write(_SERVICE_UNAVAILABLE)
                    return
                if kind == "reset":  # the request never reached the store
                    return self._reset()
                if kind == "stall":
                    time.sleep(rule.stall_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                if kind == "reset-after":  # the store applied it; the client never hears so
                    return self._reset()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if kind == "truncate" and len(data) > 1:  # half the body, then the connection drops
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    return self._reset()
                self.wfile.write(data)

            def _serve(self) -> None:
                try:
                    self._handle()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up first (a stall)
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def set_rules(self, *rules: Rule) -> list[Rule]:
        with self._lock:
            self.rules = list(rules)
            self.log = []
        return self.rules

    def injected(self) -> dict[str, int]:
        """Faults injected since the last set_rules, by kind."""
        with self._lock:
            out: dict[str, int] = {}
            for kind, _, _ in self.log:
                out[kind] = out.get(kind, 0) + 1
            return out

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
