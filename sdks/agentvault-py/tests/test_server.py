"""The SDK against a real `arx serve`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import os
import random
import threading
import time
import unittest
import urllib.request
from typing import Any, Dict, List
from unittest import mock

import agentvault
from agentvault import ArxError, ArxUnreachableError, Client, NotInGovernedCall, governed

from support import CRM, free_port, run_arx, server, tempdir


def agent_env(name: str) -> Dict[str, str]:
    srv = server()
    agent_id, token = srv.hire(name)
    return {"ARX_TOKEN": token, "ARX_BASE_URL": srv.base_url, "ARX_AGENT_ID": agent_id, "ARX_LOCAL_MODE": "",
            "ARX_LOCAL_RECORD_DIR": tempdir()}


def types(entries: List[Dict[str, Any]]) -> List[str]:
    return [e["type"] for e in entries]


class QuickStartTest(unittest.TestCase):
    def test_quick_start(self) -> None:
        srv = server()
        crm = CRM(srv)
        self.addCleanup(crm.close)
        env = agent_env("quick-start")
        with mock.patch.dict(os.environ, env):
            # The README's quick start, verbatim except for the system it
            # calls (a stand-in CRM that checks the credential with ARX, and
            # urllib in a thread in place of httpx, which is not installed).
            from agentvault import governed, Client

            # Configure once, typically at process start. Reads ARX_TOKEN from env if
            # arg is omitted.
            arx = Client.from_env()

            @governed(connector="salesforce", action="account.read", risk="low")
            async def fetch_account(account_id: str) -> dict:
                # The body executes only after the credential has been issued and
                # the policy gate has cleared. The credential is bound to *this*
                # call's scope — never accessible to the broader process.
                headers = {"Authorization": f"Bearer {arx.credential}"}
                return await asyncio.to_thread(get_json, f"{crm.url}/v1/accounts/{account_id}", headers)

            account = asyncio.run(fetch_account("0017"))

        self.assertEqual(account["account"], "0017")
        self.assertTrue(account["active"], "the CRM did not accept the credential")
        self.assertIs(agentvault.default_client(), arx)
        # The credential died with its call.
        info = srv.introspect(crm.seen[0])
        self.assertFalse(info["active"])
        self.assertEqual(info["code"], "credential.call_closed")
        entries = [e for e in srv.record(env["ARX_AGENT_ID"]) if e["call"] == account["call_id"]]
        self.assertEqual(types(entries), ["credential.issued", "call.completed"])
        self.assertEqual(entries[1]["data"]["outcome"], "success")
        with self.assertRaises(NotInGovernedCall):
            arx.credential


def get_json(url: str, headers: Dict[str, str]) -> Any:
    import json

    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return json.loads(r.read())


class ServerTest(unittest.TestCase):
    def setUp(self) -> None:
        self.srv = server()
        self.env = agent_env("py-" + self.id().rsplit(".", 1)[-1].replace("_", "-")[:40])
        self.arx = Client(token=self.env["ARX_TOKEN"], base_url=self.env["ARX_BASE_URL"], agent_id=self.env["ARX_AGENT_ID"],
                          local_record_dir=self.env["ARX_LOCAL_RECORD_DIR"])
        self.agent = self.env["ARX_AGENT_ID"]
        self.token = self.env["ARX_TOKEN"]

    def test_refusal(self) -> None:
        ran = []

        @governed(connector="hubspot", action="contact.read", client=self.arx)
        def read_contact() -> None:
            ran.append(1)

        with self.assertRaises(ArxError) as cm:
            read_contact()
        e = cm.exception
        self.assertEqual(e.code, "manifest.connector_not_declared")
        self.assertEqual(e.status, 403)
        self.assertTrue(e.call_id)
        self.assertIn("hubspot", e.message)
        self.assertIn("scope.connectors", e.hint)
        self.assertEqual(ran, [])
        refused = [x for x in self.srv.record(self.agent) if x["call"] == e.call_id]
        self.assertEqual(types(refused), ["credential.refused"])
        self.assertEqual(refused[0]["data"]["code"], "manifest.connector_not_declared")

    def test_arguments_go_with_the_call(self) -> None:
        class Account:
            def __str__(self) -> str:
                return "account 0017"

        @governed(connector="salesforce", action="account.read", client=self.arx)
        def read(account_id: str, fields: List[str], *, limit: int = 10, who: object = None, ratio: float = float("nan")) -> str:
            return account_id

        @governed(connector="salesforce", action="account.read", client=self.arx, args=lambda account_id, secret: {"id": account_id})
        def chosen(account_id: str, secret: str) -> str:
            return account_id

        @governed(connector="salesforce", action="account.read", client=self.arx, args=False)
        def none(account_id: str) -> str:
            return account_id

        self.assertEqual(read("0017", ["name", "industry"], who=Account()), "0017")
        chosen("0018", "hunter2")
        none("0019")
        got = [c.get("args") for c in sorted(self.srv.calls(self.agent), key=lambda c: c["created_at"])]
        self.assertEqual(got, [{"account_id": "0017", "fields": ["name", "industry"], "limit": 10, "who": "account 0017", "ratio": "nan"},
                               {"id": "0018"}, None])
        with self.assertRaises(ArxError) as cm:
            read("x" * 9000, [])
        self.assertEqual(cm.exception.code, "request.invalid")
        self.assertIn("args=False", cm.exception.hint)

    def test_usage_goes_with_the_completion(self) -> None:
        arx = self.arx

        @governed(connector="salesforce", action="account.read", client=arx)
        def draft(n: int) -> str:
            for _ in range(n):
                arx.report_usage(tokens=700, amount="0.10 USD")
            arx.report_usage(amount="0.000001 USD")
            return "ok"

        @governed(connector="salesforce", action="account.read", client=arx)
        async def summarize() -> str:
            arx.report_usage(tokens=42)
            with self.assertRaisesRegex(ValueError, "after amounts in|at most six decimals"):
                arx.report_usage(amount="0.0000001 USD")
            return "ok"

        draft(2)
        asyncio.run(summarize())
        with self.assertRaises(NotInGovernedCall):
            arx.report_usage(tokens=1)
        done = [e["data"] for e in self.srv.record(self.agent) if e["type"] == "call.completed"]
        self.assertEqual([(d.get("tokens"), d.get("amount"), d.get("charged")) for d in done[-2:]],
                         [(1400, "0.200001 USD", None), (42, None, None)])  # no spend cap: recorded, not charged

    def test_errors_and_cancellation_are_outcomes(self) -> None:
        arx = self.arx

        @governed(connector="salesforce", action="account.read", client=arx, summary=lambda n: f"account {n}")
        async def failing(n: int) -> None:
            raise ValueError(f"crm refused {n} with {arx.credential.token}\x00 and a NUL")

        with self.assertRaises(ValueError):
            asyncio.run(failing(7))

        started: List[bool] = []

        @governed(connector="db", action="query", client=arx)
        async def slow() -> None:
            started.append(True)
            await asyncio.sleep(30)

        async def cancel_slow() -> None:
            t = asyncio.ensure_future(slow())
            while not started:  # cancel the work, not the request for it
                await asyncio.sleep(0.01)
            t.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await t

        asyncio.run(cancel_slow())

        @governed(connector="db", action="query", client=arx)
        def sync_ok(x: int) -> int:
            return x * 2

        self.assertEqual(sync_ok(21), 42)
        done = [e for e in self.srv.record(self.agent) if e["type"] == "call.completed"]
        self.assertEqual([e["data"]["outcome"] for e in done], ["error", "cancelled", "success"])
        self.assertTrue(done[0]["data"]["error"].startswith("ValueError: crm refused 7 with REDACTED"), done[0]["data"])
        # A NUL in the error (the server refuses one) still lets the outcome land, shown as \x00.
        self.assertIn("REDACTED\\x00 and a NUL", done[0]["data"]["error"])
        issued = [e for e in self.srv.record(self.agent) if e["type"] == "credential.issued"]
        self.assertEqual(issued[0]["data"]["summary"], "account 7")

    def test_credential_isolation_between_tasks(self) -> None:
        arx = self.arx

        @governed(connector="salesforce", action="account.read", client=arx)
        async def work(i: int) -> Any:
            mine = arx.credential
            call_id = arx.current_call.id
            for _ in range(3):
                await asyncio.sleep(random.random() / 50)
                self.assertEqual(arx.credential.token, mine.token, "another task's credential leaked in")
            info = await asyncio.to_thread(self.srv.introspect, mine.token)
            return call_id, mine.token, info

        async def main() -> List[Any]:
            return await asyncio.gather(*(work(i) for i in range(16)))

        results = asyncio.run(main())
        self.assertEqual(len({r[1] for r in results}), 16, "tasks shared a credential")
        for call_id, _, info in results:
            self.assertTrue(info["active"])
            self.assertEqual(info["call_id"], call_id)
        with self.assertRaises(NotInGovernedCall):
            arx.credential

    def test_credential_isolation_between_threads(self) -> None:
        arx = self.arx
        barrier = threading.Barrier(6)

        @governed(connector="db", action="query", client=arx)
        def work() -> Any:
            mine = arx.credential.token
            barrier.wait(10)  # all six calls are open at once here
            time.sleep(random.random() / 20)
            return arx.current_call.id, mine, arx.credential.token, self.srv.introspect(mine)["call_id"]

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: work(), range(6)))
        self.assertEqual(len({r[1] for r in results}), 6)
        for call_id, before, after, introspected in results:
            self.assertEqual(before, after)
            self.assertEqual(call_id, introspected)

    def test_another_clients_call_is_not_ours(self) -> None:
        other = Client(token="arxa_other", base_url=self.env["ARX_BASE_URL"])

        @governed(connector="db", action="query", client=self.arx)
        def work() -> None:
            with self.assertRaises(NotInGovernedCall):
                other.credential

        work()

    def test_approval_wait_resumes_on_approval(self) -> None:
        arx = self.arx
        approver = self.srv.approver_token()
        ran = []

        @governed(connector="salesforce", action="account.delete", risk="high", client=arx, summary="delete 0017")
        async def delete_account() -> str:
            ran.append(time.monotonic())
            return arx.current_call.id

        async def main() -> Any:
            t = asyncio.ensure_future(delete_account())
            call = await asyncio.to_thread(self.wait_pending)
            await asyncio.sleep(1.0)
            self.assertFalse(t.done(), "a high-risk call ran without approval")
            self.assertEqual(ran, [])
            status, out = await asyncio.to_thread(self.srv.api, "POST", f"/v1/approvals/{call['id']}/approve",
                                                  {"reason": "fine"}, approver)
            self.assertEqual(status, 200, out)
            approved = time.monotonic()
            result = await asyncio.wait_for(t, 10)
            return call, result, ran[0] - approved

        call, result, delay = asyncio.run(main())
        self.assertEqual(result, call["id"])
        self.assertLess(delay, 3.0, "the long poll did not resume as soon as the approver decided")
        mine = [e["type"] for e in self.srv.record(self.agent) if e["call"] == call["id"]]
        self.assertEqual(mine[:2], ["call.requested", "approval.requested"])
        self.assertIn("approval.granted", mine)
        self.assertEqual(mine[-1], "call.completed")

    def test_approval_denied(self) -> None:
        approver = self.srv.approver_token()

        @governed(connector="salesforce", action="account.delete", risk="high", client=self.arx)
        def delete_account() -> None:
            self.fail("a denied call ran")

        def deny() -> None:
            call = self.wait_pending()
            self.srv.api("POST", f"/v1/approvals/{call['id']}/deny", {"reason": "no"}, approver)

        t = threading.Thread(target=deny)
        t.start()
        with self.assertRaises(ArxError) as cm:
            delete_account()
        t.join()
        self.assertEqual(cm.exception.code, "call.denied")

    def test_cancelled_while_waiting_withdraws(self) -> None:
        ran = []

        @governed(connector="salesforce", action="account.delete", risk="high", client=self.arx)
        async def delete_account() -> None:
            ran.append(1)

        async def main() -> Dict[str, Any]:
            t = asyncio.ensure_future(delete_account())
            call = await asyncio.to_thread(self.wait_pending)
            await asyncio.sleep(0.5)
            self.assertFalse(t.done())
            t.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await t
            return call

        call = asyncio.run(main())
        self.assertEqual(ran, [])
        deadline = time.monotonic() + 10
        while True:  # cancelled before the request returned, the withdrawal follows it
            mine = [e for e in self.srv.record(self.agent) if e["call"] == call["id"]]
            if len(mine) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(types(mine), ["call.requested", "approval.requested", "approval.withdrawn"])
        self.assertEqual(mine[-1]["data"]["outcome"], "cancelled")
        status = [c["status"] for c in self.srv.calls(self.agent) if c["id"] == call["id"]]
        self.assertEqual(status, ["failed"])

    def wait_pending(self) -> Dict[str, Any]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for c in self.srv.calls(self.agent):
                if c["status"] == "pending_approval":
                    return c
            time.sleep(0.05)
        raise AssertionError("no call became pending_approval")

    def test_secrets_stay_out_of_reprs_and_logs(self) -> None:
        arx = self.arx
        logs = io.StringIO()
        handler = logging.StreamHandler(logs)
        lg = logging.getLogger("agentvault")
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
        self.addCleanup(lg.removeHandler, handler)
        seen: Dict[str, Any] = {}

        @governed(connector="db", action="query", client=arx)
        def work() -> None:
            cred = arx.credential
            seen["token"] = cred.token
            seen["texts"] = [str(cred), repr(cred), "%s" % cred, repr(arx.current_call), repr(arx)]
            logging.getLogger("agentvault").info("credential %s", cred)
            self.assertTrue(f"{cred}".startswith("eyJ"), "an f-string gives the token itself")
            self.assertEqual(cred.auth_header()["Authorization"], "Bearer " + cred.token)

        work()
        texts = seen["texts"] + [repr(arx), str(arx.__dict__), logs.getvalue()]
        for t in texts:
            self.assertNotIn(self.token, t)
            self.assertNotIn(seen["token"], t)
        self.assertIn("REDACTED", seen["texts"][0])
        # A server refusal that echoed the token would be scrubbed too.
        bad = Client(token="arxa_not_a_real_token", base_url=self.env["ARX_BASE_URL"])
        with self.assertRaises(ArxError) as cm:
            bad.request("db", "query")
        self.assertEqual(cm.exception.code, "auth.invalid_token")
        self.assertNotIn("arxa_not_a_real_token", str(cm.exception) + repr(cm.exception) + repr(bad))

    def test_unreachable_fails_closed_and_records(self) -> None:
        d = tempdir()
        arx = Client(token=self.token, base_url=f"http://127.0.0.1:{free_port()}/v1", agent_id=self.agent, local_record_dir=d)
        arx._retry.base = 0.01
        ran = []

        @governed(connector="salesforce", action="account.read", client=arx, summary="account 9")
        def read() -> None:
            ran.append(1)

        with self.assertRaises(ArxUnreachableError) as cm:
            read()
        e = cm.exception
        self.assertEqual(e.code, "client.unreachable")
        self.assertEqual(ran, [])
        self.assertEqual(e.record_file, os.path.join(d, self.agent + ".jsonl"))
        self.assertIn("arx record import", e.hint)
        self.assertNotIn(self.token, str(e))
        p = run_arx("record", "verify", d)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # Once ARX is back, the operator attaches the attempt to the record.
        p = run_arx("record", "import", e.record_file, "--agent", self.agent, env=self.srv.env())
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        imported = [x for x in self.srv.record(self.agent) if x["type"] == "record.imported"]
        self.assertEqual(len(imported), 1)
        local = imported[0]["data"]["entry"]
        self.assertEqual((local["type"], local["connector"], local["data"]["summary"]), ("call.unreachable", "salesforce", "account 9"))


class ConfigTest(unittest.TestCase):
    def test_from_env_checks(self) -> None:
        with mock.patch.dict(os.environ, {"ARX_TOKEN": "", "ARX_LOCAL_MODE": ""}):
            with self.assertRaisesRegex(ValueError, "ARX_TOKEN"):
                Client.from_env()
        with mock.patch.dict(os.environ, {"ARX_TOKEN": "arxa_x", "ARX_LOCAL_MODE": "maybe"}):
            with self.assertRaisesRegex(ValueError, "ARX_LOCAL_MODE"):
                Client.from_env()
        for bad in ("api.arxsec.io/v1", "ftp://x/v1", "https://u:p@x/v1", "https://x/v1?a=b"):
            with self.assertRaises(ValueError):
                Client(token="arxa_x", base_url=bad)
        with self.assertRaisesRegex(ValueError, "ARX_TOKEN"):
            Client(token="arxa x")
        c = Client.from_env(token="arxa_tok", base_url="http://127.0.0.1:9/v1/")
        self.assertEqual(c.base_url, "http://127.0.0.1:9/v1")
        self.assertIs(agentvault.default_client(), c)

    def test_governed_checks(self) -> None:
        with self.assertRaises(ValueError):
            governed(connector="crm", action="x", risk="extreme")
        with self.assertRaises(TypeError):
            @governed(connector="crm", action="x")
            def gen() -> Any:
                yield 1

    def test_no_default_client(self) -> None:
        agentvault.set_default_client(None)

        @governed(connector="crm", action="x")
        def f() -> None:
            pass

        with self.assertRaises(ArxError) as cm:
            f()
        self.assertEqual(cm.exception.code, "client.no_client")


if __name__ == "__main__":
    unittest.main()
