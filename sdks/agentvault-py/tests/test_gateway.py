"""Client.gateway_request against a real `arx serve` with an HTTP connector.

The agent never holds the connector's secret: the gateway injects it on the
way to the system of record, and only for the requests of a live call
whose action allows the method and path.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import secrets
import threading
import unittest
import urllib.error
import urllib.request
from typing import Any, Dict, List, Tuple

from agentvault import ArxError, Client, NotInGovernedCall, governed

from support import Server, tempdir

CONNECTORS = """connectors:
  salesforce:
    kind: http
    upstream: {upstream}/api
    secret: env:PY_GATEWAY_SECRET
    auth: bearer
    timeout: 10s
    actions:
      account.read:
        allow: ["GET /accounts/*"]
      account.delete:
        allow: ["DELETE /accounts/*"]
"""


class Upstream:
    """A system of record that accepts only the connector's real secret."""

    def __init__(self, secret: str) -> None:
        outer = self
        self.seen: List[Tuple[str, str, Dict[str, str]]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.seen.append(("GET", self.path, dict(self.headers)))
                ok = self.headers.get("Authorization") == "Bearer " + secret
                body = json.dumps({"path": self.path, "authorized": ok}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_DELETE = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class GatewayTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.secret = "sf-" + secrets.token_hex(16)
        cls.upstream = Upstream(cls.secret)
        path = os.path.join(tempdir(), "connectors.yaml")
        with open(path, "w") as f:
            f.write(CONNECTORS.format(upstream=cls.upstream.url))
        cls.srv = Server(("--connectors", path), {"PY_GATEWAY_SECRET": cls.secret})

    @classmethod
    def tearDownClass(cls) -> None:
        cls.srv.stop()
        cls.upstream.close()

    def setUp(self) -> None:
        self.agent, token = self.srv.hire("py-gw-" + self.id().rsplit(".", 1)[-1].replace("_", "-")[:30])
        self.arx = Client(token=token, base_url=self.srv.base_url, agent_id=self.agent, local_record_dir=tempdir())
        self.upstream.seen.clear()

    def test_forwards_with_the_real_secret(self) -> None:
        creds: List[str] = []

        @governed(connector="salesforce", action="account.read", risk="low", client=self.arx)
        def fetch(account: str) -> Tuple[int, Any, bytes]:
            creds.append(self.arx.credential.token)
            r = self.arx.gateway_request("GET", f"/accounts/{account}", headers={"X-Trace": "t1"})
            return r.status, r.json(), r.body

        status, doc, raw = fetch("0017")
        self.assertEqual(status, 200)
        self.assertEqual(doc, {"path": "/api/accounts/0017", "authorized": True})
        self.assertEqual(len(self.upstream.seen), 1)
        method, path, headers = self.upstream.seen[0]
        self.assertEqual((method, path), ("GET", "/api/accounts/0017"))
        self.assertEqual(headers.get("X-Trace"), "t1")
        # The upstream saw the real secret and nothing of the agent's; the
        # agent saw nothing of the secret.
        self.assertNotIn(creds[0], json.dumps(headers))
        self.assertNotIn(self.secret.encode(), raw)
        # The gateway request is in the record, without the secret.
        entries = self.srv.record(self.agent)
        self.assertIn("gateway.request", [e["type"] for e in entries])
        self.assertNotIn(self.secret, json.dumps(entries))
        self.assertNotIn(creds[0], json.dumps(entries))
        # The credential died with its call: the gateway refuses it now.
        req = urllib.request.Request(f"{self.srv.base_url}/gateway/salesforce/accounts/0017",
                                     headers={"Authorization": "Bearer " + creds[0]})
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(cm.exception.code, 401)
        self.assertEqual(json.loads(cm.exception.read())["error"]["code"], "credential.call_closed")
        self.assertEqual(len(self.upstream.seen), 1)

    def test_action_bounds_method_and_path(self) -> None:
        @governed(connector="salesforce", action="account.read", risk="low", client=self.arx)
        def probe() -> List[Tuple[int, str]]:
            out = []
            for method, path in [("DELETE", "/accounts/0017"), ("GET", "/admin/users"),
                                 ("GET", "/accounts/../admin"), ("GET", "/accounts/%2e%2e/admin")]:
                r = self.arx.gateway_request(method, path)
                out.append((r.status, r.json()["error"]["code"]))
            return out

        self.assertEqual(probe(), [(403, "gateway.method_not_allowed"), (403, "gateway.path_not_allowed"),
                                   (400, "gateway.path_invalid"), (400, "gateway.path_invalid")])
        self.assertEqual(self.upstream.seen, [], "a refused request reached the system of record")

    def test_async(self) -> None:
        @governed(connector="salesforce", action="account.read", risk="low", client=self.arx)
        async def fetch(account: str) -> Any:
            r = await self.arx.gateway_request_async("GET", f"accounts/{account}")
            return r.json()

        async def main() -> List[Any]:
            return await asyncio.wait_for(asyncio.gather(*(fetch(str(i)) for i in range(8))), 60)

        docs = asyncio.run(main())
        self.assertEqual(sorted(d["path"] for d in docs), sorted(f"/api/accounts/{i}" for i in range(8)))
        self.assertTrue(all(d["authorized"] for d in docs))

    def test_outside_a_governed_call(self) -> None:
        with self.assertRaises(NotInGovernedCall):
            self.arx.gateway_request("GET", "/accounts/1")

    def test_terminated_agent(self) -> None:
        seen: List[Tuple[int, str]] = []

        @governed(connector="salesforce", action="account.read", risk="low", client=self.arx)
        def fetch_after_termination() -> None:
            status, out = self.srv.api("POST", f"/v1/agents/{self.agent}/terminate", {"reason": "test"})
            assert status == 200, out
            r = self.arx.gateway_request("GET", "/accounts/1")
            seen.append((r.status, r.json()["error"]["code"]))

        with self.assertRaises(ArxError) as cm:
            fetch_after_termination()  # closing the call is refused too: its token is revoked
        self.assertEqual(cm.exception.code, "client.completion_failed")
        self.assertIn("auth.invalid_token", str(cm.exception))  # the revoked token
        self.assertEqual(seen, [(403, "agent.terminated")])
        self.assertEqual(self.upstream.seen, [])

if __name__ == "__main__":
    unittest.main()
