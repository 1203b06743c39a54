"""HTTP: routes, the token check, and limits on what a client can make the
agent hold (body size, connection count, idle and slow connections)."""

import hmac
import json
import logging
import os
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from . import AGENT, TOKEN_HEADER, metrics
from .api import ApiError, SESSION_ID_RE, query_interface
from .userprog import MAX_OBJECT_BYTES

log = logging.getLogger("xdplab-agent")

MAX_BODY_BYTES = 64 * 1024         # the largest valid request is well under 2 KiB
# POST /programs carries an object: a larger body, read only after the token was checked.
UPLOAD_PATH = "/programs"
SOCKET_TIMEOUT_S = 10.0            # per read/write: an idle or stalled client is dropped
MAX_CONNECTIONS = 32               # open connections at once; more are closed at accept


class Handler(BaseHTTPRequestHandler):
    """One HTTP connection to the agent (self.server.agent): reads a bounded body,
    checks the token, routes the request to the agent's method (_route), and
    answers with JSON, a pcap or a features file, or an {"error"} with its status.
    Holds nothing across requests but the connection."""

    protocol_version = "HTTP/1.1"
    server_version = AGENT
    timeout = SOCKET_TIMEOUT_S      # StreamRequestHandler sets it on the socket

    def log_message(self, fmt, *args):
        log.info("%s %s", self.client_address[0], fmt % args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _send(self, status, data, ctype, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status, obj):
        self._send(status, (json.dumps(obj, indent=1) + "\n").encode(), "application/json")

    def _read_body(self, limit=MAX_BODY_BYTES):
        """The raw body, at most `limit` bytes (read before the token check,
        so a refused request leaves the connection usable; an upload's larger
        body only after it)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "Transfer-Encoding: not supported; send a Content-Length")
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "Content-Length: not an integer")
        if n < 0 or n > limit:
            self.close_connection = True
            raise ApiError(413, "Content-Length: %d is over the limit of %d bytes"
                           % (n, limit) if n > 0 else "Content-Length: negative")
        return self.rfile.read(n)

    def _token_state(self, agent):
        """None (no header), True (right) or False (wrong); constant-time compare.
        The token comes in TOKEN_HEADER or, as Prometheus sends it (its scrape
        setting `authorization:`), in `Authorization: Bearer <token>`; when both
        are sent, both must be right.  Another Authorization scheme is wrong."""
        token, auth = self.headers.get(TOKEN_HEADER), self.headers.get("Authorization")
        tokens = [] if token is None else [token]
        if auth is not None:
            scheme, _, bearer = auth.strip().partition(" ")
            tokens.append(bearer.strip() if scheme.lower() == "bearer" else None)
        if not tokens:
            return None
        right = [t is not None and hmac.compare_digest(t.encode("utf-8", "replace"),
                                                        agent.token.encode())
                 for t in tokens]
        return all(right)

    def _dispatch(self, method):
        agent = self.server.agent
        try:
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            auth = self._token_state(agent)
            if path == UPLOAD_PATH and method == "POST" and auth:
                raw = self._read_body(MAX_OBJECT_BYTES)
            else:
                raw = self._read_body()
            if path == "/health" and method == "GET" and auth is None:
                return self._send_json(200, {"ok": True, "agent": AGENT})
            if not auth:
                raise ApiError(401, "%s header: missing or wrong token" % TOKEN_HEADER)
            route = self._route(agent, method, path, url.query, raw)
            out = route()
            if out is not None:
                self._send_json(*out)
        except ApiError as e:
            self._send_json(e.status, {"error": e.message})
        except (socket.timeout, ConnectionError) as e:
            log.warning("%s %s: connection lost: %s", method, self.path[:200], e)
            self.close_connection = True
        except Exception as e:
            log.error("%s %s failed:\n%s", method, self.path[:200], traceback.format_exc())
            self._send_json(500, {"error": "%s %s failed: %s: %s"
                                  % (method, self.path[:200], type(e).__name__, e)})

    @staticmethod
    def _parse_json(raw):
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as e:
            raise ApiError(400, "body: not valid JSON (%s)" % e)

    def _route(self, agent, method, path, query, raw):
        body = lambda: self._parse_json(raw)   # noqa: E731
        parts = path.strip("/").split("/")
        routes = None
        if path == "/health":
            routes = {"GET": lambda: (200, agent.health())}
        elif path == "/metrics":
            routes = {"GET": lambda: self._send_metrics(agent)}
        elif path == "/build":
            routes = {"POST": lambda: (200, agent.build(body()))}
        elif path == UPLOAD_PATH:
            routes = {"POST": lambda: (200, agent.upload_program(
                raw, self.headers.get("X-Xdplab-Sha256")))}
        elif path == "/programs/check":
            routes = {"POST": lambda: (200, agent.check_program(body()))}
        elif path == "/sessions":
            routes = {"POST": lambda: (201, agent.arm(body()))}
        elif path == "/environment":
            routes = {"GET": lambda: (200, agent.environment())}
        elif path == "/reset":
            routes = {"POST": lambda: (200, agent.reset())}
        elif len(parts) >= 2 and parts[0] == "sessions":
            sid, rest = parts[1], "/".join(parts[2:])
            if not SESSION_ID_RE.match(sid):
                raise ApiError(404, "no session %r on this agent" % sid[:80])
            get = lambda: agent.get_session(sid)   # noqa: E731
            if rest == "":
                routes = {"GET": lambda: (200, get().summary())}
            elif rest == "capture/stop":
                routes = {"POST": lambda: (200, get().capture_stop())}
            elif rest == "capture.pcap":
                routes = {"GET": lambda: self._send_pcap(get(), query)}
            elif rest == "features":
                routes = {"GET": lambda: self._send_features(get(), query)}
            elif rest == "capture/check":
                routes = {"POST": lambda: (200, agent.capture_check(get(), body()))}
            elif rest == "disarm":
                routes = {"POST": lambda: (200, agent.disarm(get()))}
        if routes is None:
            raise ApiError(404, "no such endpoint: %s" % path[:200])
        if method not in routes:
            raise ApiError(405, "method %s not allowed on %s" % (method, path[:200]))
        return routes[method]

    def _send_metrics(self, agent):
        state = agent.state()
        self._send(200, metrics.render(state, AGENT).encode(), metrics.CONTENT_TYPE)

    def _send_pcap(self, s, query):
        name = query_interface(query, [i.name for i in s.ifaces])
        iface, path = self.server.agent.stopped_capture(s, name)
        self._send_file(s, path, "application/vnd.tcpdump.pcap", "%s.%s.pcap" % (s.id, name),
                        iface.capture.get("pcap_sha256") or "")
        return None

    def _send_features(self, s, query):
        name = query_interface(query, [i.name for i in s.ifaces])
        path = s.features_file(name)
        block = ((((s.result or {}).get("interfaces") or {}).get(name) or {})
                 .get("features") or {}).get("features_file") or {}
        self._send_file(s, path, "application/octet-stream",
                        "%s.features-%s.bin" % (s.id, name), block.get("sha256") or "")
        return None

    def _send_file(self, s, path, ctype, filename, sha256):
        try:
            f = open(path, "rb")
        except OSError as e:
            raise ApiError(500, "session %s: cannot open %s: %s" % (s.id, path, e.strerror))
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Disposition", "attachment; filename=%s" % filename)
            self.send_header("X-Xdplab-Sha256", sha256)
            self.end_headers()
            try:
                for chunk in iter(lambda: f.read(1 << 16), b""):
                    self.wfile.write(chunk)
            except OSError as e:   # headers are out: no JSON error possible any more
                log.warning("session %s: download of %s aborted: %s", s.id, filename, e)
                self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, agent):
        self.agent = agent
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            log.warning("%s: %d connections open already; closing this one",
                        client_address[0], MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
