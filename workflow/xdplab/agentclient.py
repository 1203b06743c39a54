"""The controller's side of the DUT agent's REST API (see PROTOCOL.md).

Every failure becomes an AgentError whose message names the agent's address
and what failed, so a rule's error says which host to look at; where the cause
is known, `fix` says what to do about it, and `transient` whether running again
could help by itself (the end of a failed run says so, xdplab.housekeeping).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import requests

from .agent import TOKEN_HEADER  # the header's name, defined once with the agent


class AgentError(RuntimeError):
    """`fix`: what to do (None when the cause is not known); `transient`: the failure may
    not happen again (a timeout, a connection that broke off), so running again can help;
    a refused connection or token will be refused again until someone fixes it."""

    def __init__(self, message: str, status: int | None = None, fix: str | None = None,
                 transient: bool = False):
        super().__init__(message)
        self.status = status
        self.fix = fix
        self.transient = transient


class AgentClient:
    def __init__(self, url: str, token: str, timeout_s: float = 10.0, token_file: str | None = None):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.token_file = token_file   # where the token was read, for the fix of a refused one
        self._http = requests.Session()
        self._http.headers[TOKEN_HEADER] = token

    @classmethod
    def from_description(cls, dut: dict, timeout_s: float = 10.0) -> "AgentClient":
        token = Path(dut["token_file"]).read_text().strip()
        return cls(dut["agent_url"], token, timeout_s, token_file=str(dut["token_file"]))

    def _call(self, method: str, path: str, *, json=None, timeout_s=None, stream=False,
              data=None, headers=None):
        where = f"DUT agent at {self.url}"
        try:
            r = self._http.request(method, self.url + path, json=json, stream=stream,
                                   data=data, headers=headers,
                                   timeout=timeout_s or self.timeout_s)
        except requests.ConnectionError as e:
            raise AgentError(f"{where}: cannot connect ({_root_cause(e)})",
                             **self._connection_fix(e)) from e
        except requests.Timeout as e:
            raise AgentError(f"{where}: no answer to {method} {path} within "
                             f"{timeout_s or self.timeout_s:g} s", transient=True,
                             fix=f"the agent at {self.url} accepted the connection but did not "
                                 f"answer: see its log on the DUT (`journalctl -u xdplab-agent` "
                                 f"as a service); `curl {self.url}/health` answers at once when "
                                 f"it is well") from e
        if r.status_code >= 400:
            try:
                detail = r.json().get("error", r.text)
            except ValueError:
                detail = r.text.strip()[:300]
            fix = None
            if r.status_code == 401:
                detail = f"the token was refused ({detail})"
                fix = self._token_fix()
            raise AgentError(f"{where}: {method} {path} failed with HTTP {r.status_code}: {detail}",
                             r.status_code, fix=fix)
        return r

    def _connection_fix(self, e: requests.ConnectionError) -> dict:
        """AgentError's fix and transient for a connection that failed."""
        cause = _root_exception(e)
        if isinstance(cause, ConnectionRefusedError):
            return {"fix": f"nothing listens at {self.url}: check that the DUT agent runs and "
                           f"listens at {self._hostport()} (the address and port of its --listen)"}
        if isinstance(cause, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)) \
                or "RemoteDisconnected" in type(cause).__name__:
            return {"transient": True,
                    "fix": f"the agent at {self.url} dropped the connection: see its log on the DUT"}
        return {"fix": f"check that {self._hostport()} is the DUT agent's address and port "
                       f"(lab.dut.agent), reachable from this machine"}

    def _token_fix(self) -> str:
        read = f"the token read from {self.token_file}" if self.token_file else "the token"
        return (f"{read} is not the agent's: copy the file the agent was started with "
                f"(its --token-file) to {self.token_file or 'the token_file of the configuration'} "
                f"(the agent takes the token in the {TOKEN_HEADER} header or as "
                f"`Authorization: Bearer <token>`)")

    def _hostport(self) -> str:
        u = urlsplit(self.url)
        return u.netloc or self.url

    def health(self, timeout_s: float | None = None) -> dict:
        return self._call("GET", "/health", timeout_s=timeout_s).json()

    def environment(self, timeout_s: float | None = None) -> dict:
        """What the DUT runs: kernel and its BPF options, CPU, NICs, BCC, LLVM, tcpdump,
        Python, the collector (PROTOCOL.md)."""
        return self._call("GET", "/environment", timeout_s=timeout_s or 30).json()

    def build(self, port: int, collector: str = "features") -> dict:
        return self._call("POST", "/build", json={"port": port, "collector": collector},
                          timeout_s=120).json()

    def upload_program(self, data: bytes, sha256: str) -> dict:
        """POST /programs: an XDP object for the agent to keep by its sha256 (the agent
        refuses unless its operator started it with --allow-program-upload)."""
        return self._call("POST", "/programs", data=data, timeout_s=60,
                          headers={"X-Xdplab-Sha256": sha256,
                                   "Content-Type": "application/octet-stream"}).json()

    def check_program(self, program: dict, port: int) -> dict:
        """POST /programs/check: the program under test and the observer loaded through
        the verifier, nothing attached; what was loaded, or the refusal."""
        return self._call("POST", "/programs/check", json={"program": program, "port": port},
                          timeout_s=120).json()

    def arm(self, request: dict) -> dict:
        return self._call("POST", "/sessions", json=request, timeout_s=120).json()

    def session(self, session_id: str) -> dict:
        return self._call("GET", f"/sessions/{session_id}").json()

    def stop_capture(self, session_id: str) -> dict:
        return self._call("POST", f"/sessions/{session_id}/capture/stop", timeout_s=60).json()

    def check_capture(self, session_id: str, request: dict) -> dict:
        """The agent's check of one run id's packets in one interface's capture."""
        return self._call("POST", f"/sessions/{session_id}/capture/check", json=request,
                          timeout_s=600).json()

    def download_capture(self, session_id: str, dest: Path, interface: str | None = None) -> str:
        """Stream the capture of one interface to `dest`; return its sha256 (hex)."""
        return self._download(f"/sessions/{session_id}/capture.pcap", dest, interface,
                              f"the capture of session {session_id}")

    def download_features(self, session_id: str, dest: Path, interface: str) -> str:
        """Stream the raw feature records of one interface to `dest`; return their sha256."""
        return self._download(f"/sessions/{session_id}/features", dest, interface,
                              f"the feature records of session {session_id}")

    def _download(self, path: str, dest: Path, interface: str | None, what: str) -> str:
        import hashlib

        if interface is not None:
            path += f"?interface={interface}"
        r = self._call("GET", path, timeout_s=300, stream=True)
        size, h = 0, hashlib.sha256()
        with open(dest, "wb") as f:
            try:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
            except requests.RequestException as e:
                raise AgentError(f"DUT agent at {self.url}: the download of {what} broke off "
                                 f"after {size} bytes ({_root_cause(e)})", transient=True) from e
            finally:
                r.close()
        expected = r.headers.get("Content-Length")
        if expected is not None and expected.isdigit() and int(expected) != size:
            raise AgentError(f"DUT agent at {self.url}: {what} has {expected} bytes, received {size}")
        return h.hexdigest()

    def disarm(self, session_id: str, timeout_s: float = 60) -> dict:
        return self._call("POST", f"/sessions/{session_id}/disarm", timeout_s=timeout_s).json()

    def reset(self) -> dict:
        return self._call("POST", "/reset", timeout_s=60).json()


def _root_exception(e: BaseException) -> BaseException:
    """The innermost exception of a chain (requests wraps urllib3's, which wraps the OS's)."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = e.__cause__ or e.__context__
        if inner is None and e.args and isinstance(e.args[0], BaseException):
            inner = e.args[0]
        if inner is None:
            break
        e = inner
    return e


def _root_cause(e: BaseException) -> str:
    while e.__context__ is not None and e.__context__ is not e:
        e = e.__context__
    return str(e) or type(e).__name__
