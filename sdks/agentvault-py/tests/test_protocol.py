"""Protocol details a healthy server cannot show: retries, dropped connections, redirects.

A stand-in server answers as scripted; everything else runs against the
real `arx serve` in test_server.py.
"""

from __future__ import annotations

import http.server
import json
import threading
import unittest
from typing import Any, Dict, List

from agentvault import ArxError, Client, governed

TOKEN = "arxa_protocol_test_token"


class StandIn:
    def __init__(self) -> None:
        self.posts: List[Dict[str, Any]] = []
        self.gets = 0
        self.completions: List[Dict[str, Any]] = []
        self.post_faults: List[int] = []
        self.get_script: List[str] = []  # "drop", "pending_approval", "approved"
        self.redirect = False
        self.echo_token = False
        self.auth: List[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def call(self, status: str) -> Dict[str, Any]:
                c = {"id": "c1", "agent_id": "a1", "connector": "crm", "action": "account.read", "declared_risk": "high",
                     "risk": "high", "status": status, "idempotency_key": "k", "created_at": "2026-11-26T07:00:00Z",
                     "expires_at": "2026-11-26T08:00:00Z"}
                if status == "approved":
                    c["credential"] = {"token": "eyJ.cred.sig", "type": "Bearer", "expires_at": "2026-11-26T08:00:00Z"}
                return c

            def answer(self, status: int, body: Any, headers: Dict[str, str] = {}) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                outer.auth.append(self.headers.get("Authorization", ""))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.endswith("/complete"):
                    outer.completions.append(body)
                    self.answer(200, self.call("completed"))
                    return
                outer.posts.append(body)
                if outer.echo_token:
                    tok = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    self.answer(401, {"error": {"code": tok, "message": tok, "hint": tok, "call_id": tok}})
                    return
                if outer.redirect:
                    self.answer(302, {}, {"Location": "http://127.0.0.1:1/elsewhere"})
                    return
                if outer.post_faults:
                    self.answer(outer.post_faults.pop(0), {"error": {"code": "record.unavailable", "message": "busy"}},
                                {"Retry-After": "0"})
                    return
                if outer.get_script:
                    self.answer(202, self.call("pending_approval"))
                else:
                    self.answer(201, self.call("approved"))

            def do_GET(self) -> None:  # noqa: N802
                outer.gets += 1
                step = outer.get_script.pop(0) if outer.get_script else "approved"
                if step == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                self.answer(200, self.call(step))

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ProtocolTest(unittest.TestCase):
    def setUp(self) -> None:
        self.s = StandIn()
        self.addCleanup(self.s.close)
        self.arx = Client(token=TOKEN, base_url=self.s.url, wait=1)
        self.arx._retry.base = self.arx._wait_retry.base = 0.01

    def test_retries_reuse_the_idempotency_key(self) -> None:
        self.s.post_faults = [503, 503]
        f = governed(connector="crm", action="account.read", client=self.arx)(lambda: "ran")
        self.assertEqual(f(), "ran")
        keys = {p["idempotency_key"] for p in self.s.posts}
        self.assertEqual(len(self.s.posts), 3)
        self.assertEqual(len(keys), 1, "a retry made a new call")
        self.assertEqual([c["outcome"] for c in self.s.completions], ["success"])
        # A second call gets a key of its own.
        f()
        self.assertEqual(len({p["idempotency_key"] for p in self.s.posts}), 2)

    def test_wait_survives_dropped_connections(self) -> None:
        self.s.get_script = ["drop", "pending_approval", "drop", "approved"]
        f = governed(connector="crm", action="account.read", risk="high", client=self.arx)(lambda: self.arx.credential.token)
        self.assertEqual(f(), "eyJ.cred.sig")
        self.assertEqual(self.s.gets, 4)

    def test_redirects_are_not_followed(self) -> None:
        self.s.redirect = True
        with self.assertRaises(ArxError) as cm:
            self.arx.request("crm", "account.read")
        self.assertEqual((cm.exception.code, cm.exception.status), ("internal", 302))
        self.assertEqual(len(self.s.posts), 1)

    def test_a_refusal_that_echoes_the_token_is_scrubbed(self) -> None:
        self.s.echo_token = True
        with self.assertRaises(ArxError) as cm:
            self.arx.request("crm", "account.read")
        e = cm.exception
        for field in (e.code, str(e), repr(e), e.call_id or ""):
            self.assertNotIn(TOKEN, field)
        self.assertEqual(e.status, 401)

    def test_token_goes_as_bearer(self) -> None:
        self.arx.request("crm", "account.read")
        self.assertEqual(self.s.auth, ["Bearer " + TOKEN])


if __name__ == "__main__":
    unittest.main()


class MoneyTest(unittest.TestCase):
    """Amounts read and written as the server does (record/money_test.go)."""

    def test_parse_and_format(self) -> None:
        from agentvault.client import format_money, parse_money
        for text, micros, cur, shown in [("50 USD", 50_000_000, "USD", "50.00 USD"), ("0.013 EUR", 13_000, "EUR", "0.013 EUR"),
                                         ("12.5 GBP", 12_500_000, "GBP", "12.50 GBP"), ("0.000001 USD", 1, "USD", "0.000001 USD"),
                                         ("1000000000 USD", 1_000_000_000_000_000, "USD", "1000000000.00 USD")]:
            self.assertEqual(parse_money(text), (micros, cur))
            self.assertEqual(format_money(micros, cur), shown)
        for bad in ["", "50", "50 usd", "-5 USD", "5. USD", ".5 USD", "0.0000001 USD", "1e3 USD", "5,00 EUR",
                    "1000000000.01 USD", "5  USD", " 5 USD", "5 USD\n"]:
            with self.assertRaises(ValueError, msg=bad):
                parse_money(bad)
