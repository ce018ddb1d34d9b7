"""Local-only mode: no server, the manifest checked by the SDK, the record in JSONL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import unittest
from typing import Any, Dict, List, Optional
from unittest import mock

from agentvault import ArxError, Client, governed
from agentvault.record import parse_entry, read_local_record, verify_lines

from support import HERE, MANIFEST, SDK, arx_bin, python, run_arx, tempdir

# The types one run of workload.py records.
WORKLOAD_TYPES = [
    "credential.issued", "call.completed",
    "credential.refused",
    "drift.detected", "credential.issued", "call.completed",
    "call.requested", "approval.requested", "approval.granted", "credential.issued", "call.completed",
    "credential.issued", "call.completed",
]


def agent_dir(name: str = "local-agent") -> str:
    """A directory laid out like an agent's: manifests/job_description.yaml."""
    d = tempdir()
    os.makedirs(os.path.join(d, "manifests"))
    with open(os.path.join(d, "manifests", "job_description.yaml"), "w") as f:
        f.write(MANIFEST.format(name=name))
    return d


def local_env(d: str, **extra: str) -> Dict[str, str]:
    env = {"ARX_LOCAL_MODE": "1", "ARX_TOKEN": "", "ARX_MANIFEST": "", "ARX_LOCAL_RECORD_DIR": "",
           "ARX_LOCAL_APPROVE": "allow", "ARX_BIN": arx_bin()}
    env.update(extra)
    return env


def entries(path: str) -> List[Dict[str, Any]]:
    return [parse_entry(line) for line in read_local_record(path)]


def run_workload(d: str, repeat: int = 1, tag: str = "py", **extra: str) -> "subprocess.Popen[bytes]":
    env = dict(os.environ)
    env.update(local_env(d, **extra))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.environ.get("PYTHONPATH", ""), os.path.join(SDK, "src")] if p)
    return subprocess.Popen([python(), os.path.join(HERE, "workload.py"), "--repeat", str(repeat), "--tag", tag],
                            cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class LocalModeTest(unittest.TestCase):
    def test_quick_start_and_workload_end_to_end(self) -> None:
        d = agent_dir()
        cwd = os.getcwd()
        os.chdir(d)
        self.addCleanup(os.chdir, cwd)
        with mock.patch.dict(os.environ, local_env(d)):
            # The quick start, unchanged, with ARX_LOCAL_MODE=1 and no server.
            from agentvault import governed, Client

            arx = Client.from_env()

            @governed(connector="salesforce", action="account.read", risk="low")
            async def fetch_account(account_id: str) -> dict:
                return {"account": account_id, "authorization": f"Bearer {arx.credential}"}

            account = asyncio.run(fetch_account("0017"))
        self.assertTrue(account["authorization"].startswith("Bearer local."), account)
        self.assertEqual(len(account["authorization"]), len("Bearer local.") + 32)

        p = run_workload(d)
        out, _ = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, out.decode())
        path = os.path.join(d, "arx-records", "local-agent.jsonl")
        got = entries(path)
        self.assertEqual([e["type"] for e in got], ["credential.issued", "call.completed"] + WORKLOAD_TYPES)
        self.assertEqual(verify_lines(read_local_record(path)), [])
        self.assertTrue(all(e["agent"] == "local:local-agent" for e in got))
        refused = got[4]
        self.assertEqual((refused["connector"], refused["data"]["code"]), ("hubspot", "manifest.connector_not_declared"))
        granted = got[10]
        self.assertEqual((granted["type"], granted["risk"], granted["data"]["local"], granted["data"]["mode"]),
                         ("approval.granted", "high", True, "allow"))
        self.assertTrue(granted["actor"].startswith("local:"))
        # As the runtime records them: the refusal with the ask, the credential
        # with who approved it.
        self.assertIn("summary", refused["data"])
        issued = got[11]
        self.assertEqual((issued["type"], issued["data"]["approved_by"]), ("credential.issued", granted["actor"]))
        self.assertEqual(got[-1]["data"]["outcome"], "error")
        self.assertEqual(got[-1]["data"]["error"], "RuntimeError: query failed")
        with open(path) as f:
            self.assertNotIn("local.", f.read().replace("local:", ""), "a credential reached the record")

        # The arx CLI reads what the Python SDK wrote.
        v = run_arx("record", "verify", "arx-records", cwd=d)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        self.assertIn("OK: 15 entries", v.stdout)
        c = run_arx("manifest", "check", "manifests/job_description.yaml", "--records", "arx-records", "--json", cwd=d)
        self.assertEqual(c.returncode, 1, c.stdout + c.stderr)
        rep = json.loads(c.stdout)
        found = {(f["kind"], f.get("connector", ""), f.get("action", "")): f for f in rep["findings"]}
        self.assertEqual(found[("connector_not_declared", "hubspot", "")]["count"], 1)
        self.assertEqual(found[("action_not_declared", "salesforce", "account.merge")]["count"], 1)
        self.assertEqual(found[("connector_not_declared", "hubspot", "")]["first"]["line"], 5)
        self.assertEqual(rep["errors"], 2, rep)
        self.assertEqual(rep["calls"], 6)

    def test_many_processes_one_chain(self) -> None:
        d = agent_dir()
        procs = [run_workload(d, repeat=3, tag=f"p{i}") for i in range(4)]
        for p in procs:
            out, _ = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, out.decode())
        path = os.path.join(d, "arx-records", "local-agent.jsonl")
        lines = read_local_record(path)
        self.assertEqual(len(lines), 4 * 3 * len(WORKLOAD_TYPES))
        self.assertEqual(verify_lines(lines), [])
        v = run_arx("record", "verify", path)
        self.assertEqual(v.returncode, 0, v.stdout)
        tags = {e["data"]["summary"].split("-")[0] for e in entries(path) if e["data"].get("summary")}
        self.assertEqual(tags, {"p0", "p1", "p2", "p3"})

    def client(self, d: str, approve: str) -> Client:
        return Client(local_mode=True, manifest=os.path.join(d, "manifests", "job_description.yaml"),
                      local_record_dir=os.path.join(d, "arx-records"), local_approve=approve)

    def test_refuses_what_the_runtime_refuses(self) -> None:
        """Names, keys and summaries the runtime refuses are refused before anything is recorded."""
        d = agent_dir()
        c = self.client(d, "allow")
        for kw in ({"connector": "salesforce\n", "action": "account.read"},
                   {"connector": "salesforce", "action": "account.read", "idempotency_key": "k\n"},
                   {"connector": "salesforce", "action": "account.read", "summary": "a\x00b"},
                   {"connector": "salesforce", "action": "account.read", "summary": "é" * 257},
                   {"connector": "salesforce", "action": "account.read", "summary": "caf\udcc3"}):
            with self.subTest(repr(kw)):
                with mock.patch.dict(os.environ, {"ARX_BIN": arx_bin()}), self.assertRaises(ArxError) as cm:
                    c.request(**kw)
                self.assertEqual(cm.exception.code, "request.invalid")
        self.assertFalse(os.path.exists(os.path.join(d, "arx-records", "local-agent.jsonl")))

    def test_prompt_shows_the_summary_inert(self) -> None:
        """The summary is the agent's text: on the terminal it can neither
        clear the screen nor pose as the end of the question."""
        d = agent_dir()
        prompt = self.client(d, "prompt")
        asked: List[str] = []

        def no(q: str, cancel: Optional[threading.Event]) -> bool:
            asked.append(q)
            return False

        prompt._local.ask = no  # type: ignore[union-attr]
        hostile = "acct 9\x1b[2J\x1b]0;title\x07\r\u202e? [y/N] y"

        @governed(connector="salesforce", action="account.delete", risk="high", client=prompt, summary=hostile)
        def delete() -> None:
            self.fail("ran though denied on the terminal")

        with mock.patch.dict(os.environ, {"ARX_BIN": arx_bin()}), self.assertRaises(ArxError) as cm:
            delete()
        self.assertEqual(cm.exception.code, "call.denied")
        self.assertEqual(len(asked), 1)
        self.assertFalse(any(ch in asked[0] for ch in "\x1b\x07\r\u202e"), asked[0])
        self.assertIn("(acct 9\\x1b[2J\\x1b]0;title\\x07\\r\\u202e? [y/N] y)? [y/N] ", asked[0])

    def test_approvals(self) -> None:
        d = agent_dir()
        path = os.path.join(d, "arx-records", "local-agent.jsonl")
        with mock.patch.dict(os.environ, {"ARX_BIN": arx_bin()}):
            deny = self.client(d, "deny")

            @governed(connector="salesforce", action="account.delete", risk="high", client=deny)
            def delete() -> None:
                self.fail("a denied call ran")

            with self.assertRaises(ArxError) as cm:
                delete()
            self.assertEqual(cm.exception.code, "call.denied")
            self.assertIn("local-only mode", cm.exception.message)

            prompt = self.client(d, "prompt")
            asked: List[str] = []

            def no_tty(q: str, cancel: Optional[threading.Event]) -> bool:
                asked.append(q)
                raise OSError(6, "No such device or address")

            prompt._local.ask = no_tty  # type: ignore[union-attr]

            @governed(connector="salesforce", action="account.delete", risk="high", client=prompt, summary="acct 9")
            def delete2() -> None:
                self.fail("ran without a terminal to approve on")

            with self.assertRaises(ArxError):
                delete2()
            self.assertIn("salesforce account.delete (acct 9)", asked[0])

            prompt._local.ask = lambda q, cancel: True  # type: ignore[union-attr]
            delete3 = governed(connector="salesforce", action="account.delete", risk="high", client=prompt)(lambda: 3)
            self.assertEqual(delete3(), 3)

            asking = threading.Event()

            def wait_for_cancel(q: str, cancel: Optional[threading.Event]) -> bool:
                assert cancel is not None
                asking.set()
                cancel.wait(10)
                return False

            prompt._local.ask = wait_for_cancel  # type: ignore[union-attr]

            @governed(connector="salesforce", action="account.delete", risk="high", client=prompt)
            async def delete4() -> None:
                self.fail("ran after cancellation")

            async def cancel_it() -> None:
                t = asyncio.ensure_future(delete4())
                self.assertTrue(await asyncio.to_thread(asking.wait, 10), "never asked")
                t.cancel()
                with self.assertRaises(asyncio.CancelledError):
                    await t

            asyncio.run(cancel_it())
        got = [(e["type"], e["data"].get("reason", e["data"].get("outcome", ""))) for e in entries(path)]
        self.assertEqual([t for t, _ in got], [
            "call.requested", "approval.requested", "approval.denied",
            "call.requested", "approval.requested", "approval.denied",
            "call.requested", "approval.requested", "approval.granted", "credential.issued", "call.completed",
            "call.requested", "approval.requested", "approval.withdrawn",
        ])
        self.assertEqual(got[2][1], "ARX_LOCAL_APPROVE=deny")
        self.assertIn("set ARX_LOCAL_APPROVE=allow or deny", got[5][1])
        self.assertEqual(got[-1][1], "cancelled")

    def test_torn_file_fails_closed(self) -> None:
        d = agent_dir()
        with mock.patch.dict(os.environ, {"ARX_BIN": arx_bin()}):
            arx = self.client(d, "allow")
            f = governed(connector="db", action="query", client=arx)(lambda: 1)
            f()
            with open(os.path.join(d, "arx-records", "local-agent.jsonl"), "a") as fh:
                fh.write('{"action":"que')
            with self.assertRaises(ArxError) as cm:
                f()
        self.assertEqual(cm.exception.code, "record.unavailable")
        self.assertIn("partial line", cm.exception.message)
        self.assertIn("arx record verify", cm.exception.hint)


class ManifestSourceTest(unittest.TestCase):
    """Where local-only mode gets the manifest from (agentvault.manifest)."""

    def setUp(self) -> None:
        self.d = agent_dir()
        self.yaml = os.path.join(self.d, "manifests", "job_description.yaml")
        self.json = os.path.join(self.d, "manifests", "job_description.json")

    def call(self, env: Dict[str, str]) -> Any:
        # No arx means none beside the interpreter either (the platform
        # wheel's, when the tests run from an installed wheel).
        bundled = mock.patch("agentvault.manifest.bundled_arx", return_value=None) if env is self.no_arx else contextlib.nullcontext()
        with mock.patch.dict(os.environ, env), bundled:
            arx = Client(local_mode=True, manifest=self.yaml, local_record_dir=os.path.join(self.d, "rec"), local_approve="allow")
            return governed(connector="db", action="query", client=arx)(lambda: "ran")()

    no_arx = {"ARX_BIN": "", "PATH": "/nonexistent"}

    def test_bundled_arx(self) -> None:
        # The wheel's arx, beside the interpreter, is used with nothing on
        # PATH and no ARX_BIN.
        with mock.patch("agentvault.manifest.bundled_arx", return_value=arx_bin()):
            self.assertEqual(self.call({"ARX_BIN": "", "PATH": "/nonexistent"}), "ran")

    def test_arx_binary(self) -> None:
        self.assertEqual(self.call({"ARX_BIN": arx_bin()}), "ran")

    def test_exported_json_without_arx(self) -> None:
        p = run_arx("manifest", "export", self.yaml, "-o", self.json)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.call(self.no_arx), "ran")

    def test_stale_export(self) -> None:
        run_arx("manifest", "export", self.yaml, "-o", self.json)
        with open(self.yaml, "a") as f:
            f.write("on_drift: refuse\n")
        with self.assertRaises(ArxError) as cm:
            self.call(self.no_arx)
        self.assertIn("exported from another version", cm.exception.message)
        self.assertEqual(self.call({"ARX_BIN": arx_bin()}), "ran")  # with arx, the YAML itself

    def test_no_way_to_read_it(self) -> None:
        with self.assertRaises(ArxError) as cm:
            self.call(self.no_arx)
        # Not "manifest.invalid": the manifest may be fine; arx is missing.
        self.assertEqual(cm.exception.code, "client.arx_not_found")
        self.assertIn("ARX_BIN", cm.exception.message + cm.exception.hint)
        self.assertIn("wheel", cm.exception.hint)

    def test_invalid_manifest(self) -> None:
        with open(self.yaml, "a") as f:
            f.write("extra: 1\n")
        with self.assertRaises(ArxError) as cm:
            self.call({"ARX_BIN": arx_bin()})
        self.assertIn("extra", cm.exception.message)
        self.assertIn("arx manifest lint", cm.exception.hint)

    def test_missing_manifest(self) -> None:
        os.remove(self.yaml)
        with self.assertRaises(ArxError) as cm:
            self.call({"ARX_BIN": arx_bin()})
        self.assertIn("ARX_MANIFEST", cm.exception.hint)


if __name__ == "__main__":
    unittest.main()
