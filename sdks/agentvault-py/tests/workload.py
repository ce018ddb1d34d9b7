"""A fixed workload in local-only mode, run as a process of its own.

The same workload exists in Go (sdks/agentvault-py/python_test.go): both
write it to local records, and the tests check that `arx record verify`
accepts both and that they record the same facts.

Usage: python workload.py [--repeat N] [--tag TAG]
with ARX_LOCAL_MODE=1, ARX_MANIFEST, ARX_LOCAL_RECORD_DIR and
ARX_LOCAL_APPROVE=allow set; the manifest is support.MANIFEST.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from agentvault import ArxError, Client, governed

arx = Client.from_env()


@governed(connector="salesforce", action="account.read", risk="low", summary=lambda tag: f"{tag} read")
async def read(tag: str) -> str:
    return arx.credential.token


@governed(connector="hubspot", action="contact.read")
async def undeclared_connector(tag: str) -> None:
    raise AssertionError("a refused call ran")


@governed(connector="salesforce", action="account.merge", summary=lambda tag: f"{tag} merge")
def undeclared_action(tag: str) -> None:
    pass


@governed(connector="salesforce", action="account.delete", risk="high", summary=lambda tag: f"{tag} delete")
async def high_risk(tag: str) -> None:
    pass


@governed(connector="db", action="query", summary=lambda tag: f"{tag} query")
async def failing(tag: str) -> None:
    raise RuntimeError("query failed")


async def workload(tag: str) -> None:
    token = await read(tag)
    assert token.startswith("local."), token
    try:
        await undeclared_connector(tag)
        raise AssertionError("an undeclared connector was not refused")
    except ArxError as e:
        assert e.code == "manifest.connector_not_declared", e
    await asyncio.to_thread(undeclared_action, tag)
    await high_risk(tag)
    try:
        await failing(tag)
    except RuntimeError:
        pass


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--tag", default="py")
    args = p.parse_args()
    for i in range(args.repeat):
        asyncio.run(workload(f"{args.tag}-{i}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
