"""Test support: a real `arx serve`, the arx binary, and a system of record.

The tests run against the real runtime. ``ARX_BIN`` names the arx binary
(the Go test that runs these tests builds it); without it, it is built here
with ``go build``. One server serves all the tests of a run and is stopped
when the process exits.
"""

from __future__ import annotations

import atexit
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.dirname(HERE)
REPO = os.path.dirname(os.path.dirname(SDK))
VECTORS = os.path.join(REPO, "testdata", "vectors")

# The manifest of the agents these tests hire, with {name} for their name:
# salesforce (account.read low, account.delete high) and db (query low);
# approvals by boss@example.com.
with open(os.path.join(HERE, "job_description.yaml")) as _f:
    MANIFEST = _f.read().replace("{", "{{").replace("}", "}}").replace("name: local-agent", "name: {name}")

_tmp = tempfile.mkdtemp(prefix="agentvault-py-tests-")
atexit.register(shutil.rmtree, _tmp, True)
_lock = threading.RLock()
_arx: Optional[str] = None
_server: Optional["Server"] = None


def tempdir() -> str:
    return tempfile.mkdtemp(dir=_tmp)


def arx_bin() -> str:
    """The arx binary: ARX_BIN, or built from this repository."""
    global _arx
    with _lock:
        if _arx is None:
            env = os.environ.get("ARX_BIN")
            if env:
                _arx = env
            else:
                out = os.path.join(_tmp, "arx")
                subprocess.run(["go", "build", "-o", out, "./cmd/arx"], cwd=REPO, check=True)
                _arx = out
        return _arx


def run_arx(*args: str, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None,
            stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([arx_bin(), *args], capture_output=True, text=True, env=e, cwd=cwd, input=stdin, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `arx serve` on loopback, with an admin token."""

    def __init__(self, args: Tuple[str, ...] = (), env: Optional[Dict[str, str]] = None) -> None:
        self.data = tempdir()
        self.url = ""
        self.proc: Optional[subprocess.Popen] = None
        for _ in range(5):  # a port picked free may be taken before serve binds it
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            self.log = open(os.path.join(self.data, "serve.log"), "wb")
            self.proc = subprocess.Popen([arx_bin(), "serve", "--listen", f"127.0.0.1:{port}", "--data", self.data, *args],
                                         stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
            if self._ready():
                break
            self.stop()
        else:
            raise RuntimeError("arx serve did not start: see " + os.path.join(self.data, "serve.log"))
        with open(os.path.join(self.data, "admin.token")) as f:
            self.admin = f.read().strip()
        self.base_url = self.url + "/v1"
        self._approver: Optional[str] = None

    def _ready(self) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def env(self) -> Dict[str, str]:
        return {"ARX_SERVER": self.url, "ARX_ADMIN_TOKEN": self.admin}

    def hire(self, name: str) -> Tuple[str, str]:
        """Hire an agent with `arx hire`; return its id and token."""
        path = os.path.join(tempdir(), "job_description.yaml")
        with open(path, "w") as f:
            f.write(MANIFEST.format(name=name))
        p = run_arx("hire", path, env=self.env())
        if p.returncode != 0:
            raise RuntimeError(f"arx hire: {p.stderr}")
        lines = dict(line.replace("export ", "", 1).split("=", 1) for line in p.stdout.strip().splitlines())
        return lines["ARX_AGENT_ID"], lines["ARX_TOKEN"]

    def api(self, method: str, path: str, body: Any = None, token: Optional[str] = None) -> Tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + (token or self.admin))
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def record(self, agent_id: str) -> List[Dict[str, Any]]:
        """The agent's record entries, oldest first."""
        _, page = self.api("GET", f"/v1/agents/{agent_id}/record?limit=1000")
        return [e["entry"] for e in page["entries"]]

    def calls(self, agent_id: str) -> List[Dict[str, Any]]:
        _, page = self.api("GET", f"/v1/agents/{agent_id}/calls?limit=1000")
        return page["calls"]

    def introspect(self, credential: str) -> Dict[str, Any]:
        req = urllib.request.Request(self.base_url + "/credentials/introspect", method="POST",
                                     data=json.dumps({"credential": credential}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def approver_token(self) -> str:
        """An API token of boss@example.com, the approver the test manifest names."""
        if self._approver is None:
            status, out = self.api("POST", "/v1/users", {"email": "boss@example.com", "role": "manager", "show_link": True})
            assert status == 201, out
            pw = "correct horse battery staple"
            status, out2 = self.api("POST", "/v1/auth/setup", {"token": out["setup_token"], "password": pw})
            assert status == 200, out2
            status, out3 = self.api("POST", "/v1/auth/tokens", {"email": "boss@example.com", "password": pw, "label": "tests"})
            assert status == 201, out3
            self._approver = out3["token"]
        return self._approver


def server() -> Server:
    """The shared server, started on first use."""
    global _server
    with _lock:
        if _server is None:
            _server = Server()
            atexit.register(_server.stop)
        return _server


class CRM:
    """A stand-in system of record: it accepts a request only with a live ARX
    credential for its connector (checked by ARX's introspection) and
    answers with the call the credential belongs to."""

    def __init__(self, arx: Server, connector: str = "salesforce") -> None:
        outer = self
        self.seen: List[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                auth = self.headers.get("Authorization", "")
                token = auth[7:] if auth.startswith("Bearer ") else ""
                info = arx.introspect(token) if token else {"active": False}
                outer.seen.append(token)
                ok = info.get("active") and info.get("connector") == connector
                body = json.dumps({"account": self.path.rsplit("/", 1)[-1], "call_id": info.get("call_id"),
                                   "active": bool(ok)}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def python() -> str:
    return sys.executable
