"""The shared test vectors (testdata/vectors): the Go code checks the same files."""

from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
import unittest

from agentvault import Client, _inert
from agentvault._local import LocalBackend, check_ask
from agentvault.errors import ArxError
from agentvault.manifest import Manifest
from agentvault.record import CanonicalError, canonical_entry, canonical_json, leaf_hash, parse_entry, text_problem

from support import SDK, VECTORS


def load(name: str):
    with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
        return json.load(f)


class VectorsTest(unittest.TestCase):
    def test_canonical_entries(self) -> None:
        v = load("canonical.json")
        self.assertGreaterEqual(len(v["entries"]), 8)
        for vec in v["entries"]:
            with self.subTest(vec["name"]):
                got = canonical_entry(vec["entry"])
                self.assertEqual(got.decode("utf-8"), vec["canonical"])
                self.assertEqual(leaf_hash(got), vec["leaf_hash"])
                self.assertEqual(parse_entry(vec["canonical"].encode("utf-8")), vec["entry"])
                # Any JSON rendering of the entry canonicalizes to the same bytes.
                self.assertEqual(canonical_json(json.loads(json.dumps(vec["entry"], indent=3))), got)

    def test_rejected(self) -> None:
        v = load("canonical.json")
        self.assertGreaterEqual(len(v["rejected"]), 10)
        for vec in v["rejected"]:
            with self.subTest(vec["name"]):
                with self.assertRaises(CanonicalError):
                    parse_entry(vec["json"].encode("utf-8"))

    def test_values_without_a_canonical_form(self) -> None:
        base = {"type": "t", "time": "2026-01-01T00:00:00.000000Z"}
        for data in ({"n": 1.5}, {"n": 2 ** 53}, {"n": float("nan")}, {"s": "\ud800"}, {1: "x"}, {"o": object()}):
            with self.subTest(repr(data)):
                with self.assertRaises(CanonicalError):
                    canonical_entry(dict(base, data=data))
        # Integral floats are integers, as in Go.
        self.assertIn(b'"n":3', canonical_entry(dict(base, data={"n": 3.0})))
        with self.assertRaises(CanonicalError):
            canonical_entry({"type": ""})

    def test_decisions(self) -> None:
        v = load("decisions.json")
        manifests = {m["name"]: Manifest.from_export(m["export"]) for m in v["manifests"]}
        self.assertGreaterEqual(len(v["cases"]), 50)
        for c in v["cases"]:
            with self.subTest(f"{c['manifest']} {c['connector']} {c['action']} {c['declared']}"):
                d = manifests[c["manifest"]].decide(c["connector"], c["action"], c["declared"])
                got = {"refusal": d.refusal, "message": d.message, "risk": d.risk, "drift": d.drift,
                       "needs_approval": d.needs_approval}
                self.assertEqual(got, c["want"])

    def test_asks(self) -> None:
        v = load("asks.json")
        self.assertGreaterEqual(len(v["cases"]), 40)
        for c in v["cases"]:
            with self.subTest(c["name"]):
                try:
                    got = {"code": "", "risk": check_ask(c["connector"], c["action"], c["risk"], c["idempotency_key"])}
                except ArxError as e:
                    got = {"code": e.code, "risk": ""}
                self.assertEqual(got, c["want"])

    def test_asks_refused_before_sending(self) -> None:
        """A server's client refuses a malformed ask with the runtime's code, and sends nothing
        (nothing listens on the address: a request would fail as unreachable)."""
        with tempfile.TemporaryDirectory() as d:
            c = Client(token="arxa_test", base_url="http://127.0.0.1:9/v1", local_record_dir=d, timeout=1)
            for case in load("asks.json")["cases"]:
                if not case["want"]["code"]:
                    continue
                with self.subTest(case["name"]):
                    with self.assertRaises(ArxError) as cm:
                        c.request(case["connector"], case["action"], risk=case["risk"], idempotency_key=case["idempotency_key"])
                    self.assertEqual(cm.exception.code, case["want"]["code"])
            self.assertEqual(os.listdir(d), [])
            for bad in ((None, "account.read"), ("crm", None), ("crm", 7)):
                with self.subTest(repr(bad)):
                    with self.assertRaises(ArxError) as cm:
                        c.request(*bad)
                    self.assertEqual(cm.exception.code, "request.invalid")

    def test_texts(self) -> None:
        v = load("asks.json")
        self.assertGreaterEqual(len(v["texts"]), 8)
        for c in v["texts"]:
            with self.subTest(c["name"]):
                self.assertEqual(text_problem(c["text"], c["max"]), c["problem"])
        # Strings Go cannot hold.
        self.assertEqual(text_problem("caf\udcc3", 64), "is not valid UTF-8")
        self.assertEqual(text_problem("\ud800" * 3, 8), "is longer than 8 bytes")

    def test_local_entries(self) -> None:
        """Local-only mode appends the entries Go's does for the same calls."""
        v = load("local_entries.json")
        with tempfile.TemporaryDirectory() as d:
            b = LocalBackend(None, d, "allow")
            b._manifest = Manifest.from_export(v["manifest"])
            for st in v["steps"]:
                if not st["outcome"]:
                    with self.assertRaises(ArxError):
                        b.request(st["connector"], st["action"], st["risk"], st["summary"], st["idempotency_key"])
                    continue
                call = b.request(st["connector"], st["action"], st["risk"], st["summary"], st["idempotency_key"])
                if call["status"] == "pending_approval":
                    call = b.wait(call["id"])
                b.complete(call["id"], st["outcome"], st["error"], st["duration_ms"])
            got, calls = [], {}
            with open(b.file, encoding="utf-8") as f:
                for line in f:
                    e = json.loads(line)
                    data = {}
                    for k, val in e["data"].items():
                        if k == "expires_at":
                            val = "TIME"
                        elif k in ("approver", "approved_by") and isinstance(val, str) and val.startswith("local:"):
                            val = "local:USER"
                        data[k] = val
                    actor = "local:USER" if e["actor"].startswith("local:") else e["actor"]
                    call = calls.setdefault(e["call"], f"call-{len(calls) + 1}")
                    got.append({"type": e["type"], "call": call, "connector": e["connector"], "action": e["action"],
                                "risk": e["risk"], "actor": actor, "agent": e["agent"], "data": data})
        self.assertEqual(got, v["entries"])

    def test_inert(self) -> None:
        v = load("inert.json")
        self.assertGreaterEqual(len(v["cases"]), 12)
        for c in v["cases"]:
            with self.subTest(c["name"]):
                self.assertEqual(_inert.text(c["in"]), c["out"])

    def test_inert_surrogates(self) -> None:
        """Strings Go cannot hold: a byte that was not UTF-8 (surrogateescape) shows as Go shows the byte."""
        self.assertEqual(_inert.text(b"a\xffb".decode("utf-8", "surrogateescape")), "a\\xffb")
        self.assertEqual(_inert.text("a\ud800b"), "a\\ud800b")


class StdlibOnlyTest(unittest.TestCase):
    def test_imports(self) -> None:
        """The SDK imports nothing beyond the standard library."""
        pkg = os.path.join(SDK, "src", "agentvault")
        for name in os.listdir(pkg):
            if not name.endswith(".py"):
                continue
            with open(os.path.join(pkg, name)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                mods = []
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    mods = [node.module or ""]
                for m in mods:
                    top = m.split(".")[0]
                    self.assertTrue(top == "__future__" or top in sys.stdlib_module_names,
                                    f"{name} imports {m}, which is not in the standard library")


if __name__ == "__main__":
    unittest.main()
