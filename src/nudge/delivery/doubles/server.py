"""A small HTTP server in a thread that records requests and injects faults.

Each ESP double subclasses `DoubleServer` and registers routes; tests, the
benchmark and integration tests start one on 127.0.0.1 (a free port), point the
real SDK at its `url`, and read back `requests`. Faults are queued with
`fail(...)` and consumed by the next matching requests.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request the double received, with what it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0
    route: str = ""

    def json(self) -> Any:
        """Return the body parsed as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None

    def param(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    """What a route answers: a status, a body (JSON-ready or bytes), headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def payload(self) -> bytes:
        """Return the body as bytes."""
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


@dataclass
class Fault:
    """A planned misbehaviour for the next `times` requests matching `match`.

    ``status`` with ``body`` answers that instead of the route; ``delay`` waits
    before answering (longer than the client's timeout: a timeout);
    ``garbage`` answers 200 with a body no JSON parser reads; ``drop`` closes
    the connection without an answer.
    """

    match: re.Pattern[str]
    times: int = 1
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0
    garbage: bool = False
    drop: bool = False
    hits: int = 0


Handler = Callable[[Request, re.Match[str]], Response]

GARBAGE = b"<html><body><h1>502 Bad Gateway</h1>upstream sent \x00\xff</body>"


class DoubleServer:
    """An HTTP double of an ESP's API on 127.0.0.1, stopped by whoever starts it."""

    name = "double"

    def __init__(self, *, port: int = 0, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self._routes: list[tuple[str, re.Pattern[str], str, Handler]] = []
        self._lock = threading.RLock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """Return the base URL the double answers on."""
        if self._server is None:
            raise RuntimeError(f"{self.name} double is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> DoubleServer:
        """Start serving in a background thread; return self."""
        double = self

        class _Handler(_RequestHandler):
            owner = double

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-double",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> DoubleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- routes

    def route(
        self, method: str, pattern: str, name: str = ""
    ) -> Callable[[Handler], Handler]:
        """Register a handler for a method and a path pattern (a regex)."""

        def register(handler: Handler) -> Handler:
            regex = re.compile(pattern + r"\Z")
            self._routes.append((method, regex, name or pattern, handler))
            return handler

        return register

    def add_route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register a handler for a method and a path pattern (a regex)."""
        self.route(method, pattern)(handler)

    # -------------------------------------------------------------- faults

    def fail(
        self,
        match: str,
        *,
        times: int = 1,
        status: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
        delay: float = 0.0,
        garbage: bool = False,
        drop: bool = False,
    ) -> Fault:
        """Queue a fault for requests whose "METHOD /path" matches a regex."""
        fault = Fault(
            re.compile(match),
            times=times,
            status=status,
            body=body,
            headers=headers or {},
            content_type=content_type,
            delay=delay,
            garbage=garbage,
            drop=drop,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def _take_fault(self, key: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.hits < fault.times and fault.match.search(key):
                    fault.hits += 1
                    return fault
        return None

    # -------------------------------------------------------------- records

    def recorded(self, method: str | None = None, path: str = "") -> list[Request]:
        """Return the recorded requests, optionally of a method and path regex."""
        regex = re.compile(path) if path else None
        with self._lock:
            found = list(self.requests)
        return [
            r
            for r in found
            if (method is None or r.method == method)
            and (regex is None or regex.search(r.path))
        ]

    def reset(self) -> None:
        """Forget recorded requests and pending faults."""
        with self._lock:
            self.requests.clear()
            self.faults.clear()

    # -------------------------------------------------------------- hooks

    def authorize(self, request: Request) -> Response | None:
        """Return an error response when a request's credentials are refused."""
        return None

    def admit(self, request: Request, route: str) -> Response | None:
        """Return an error response when a request is over the rate limits."""
        return None

    def not_found(self, request: Request) -> Response:
        """Return the answer for a path no route knows."""
        return Response(404, {"detail": f"no route for {request.path}"})

    def dispatch(self, request: Request) -> Response:
        """Answer a request: faults first, then credentials, limits and the route."""
        for method, regex, name, handler in self._routes:
            if method != request.method:
                continue
            match = regex.match(request.path)
            if match is None:
                continue
            request.route = name
            refused = self.authorize(request) or self.admit(request, name)
            if refused is not None:
                return refused
            return handler(request, match)
        return self.not_found(request)


class _RequestHandler(BaseHTTPRequestHandler):
    owner: DoubleServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the double quiet."""
        return None

    def _handle(self) -> None:
        owner = self.owner
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            at=owner.clock(),
        )
        with owner._lock:
            owner.requests.append(request)

        fault = owner._take_fault(f"{self.command} {split.path}")
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.drop:
            request.status = -1
            self.close_connection = True
            return
        if fault is not None and (fault.status is not None or fault.garbage):
            response = Response(
                fault.status or 200,
                GARBAGE if fault.garbage else fault.body,
                dict(fault.headers),
                "text/html" if fault.garbage else fault.content_type,
            )
        else:
            try:
                response = owner.dispatch(request)
            except Exception as err:  # a bug in a double must not hang a client
                response = Response(500, {"detail": f"double failed: {err!r}"})
        request.status = response.status
        self._answer(response)

    def _answer(self, response: Response) -> None:
        payload = response.payload()
        try:
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            if payload or response.status not in (204, 304):
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


def new_id(prefix: str = "") -> str:
    """Return a fresh random id, as ESPs hand out."""
    return prefix + uuid.uuid4().hex[:12]
