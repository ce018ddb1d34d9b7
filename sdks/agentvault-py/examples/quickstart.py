"""The quick start, runnable: against `arx serve`, or in local-only mode.

It acts as the reference agent (reference-agents/sales-research), so hire it
with that agent's manifest, or point ARX_MANIFEST at it in local-only mode.
See the "Python quick start" and "Local-only mode" sections of the ARX
README.

    python3 quickstart.py              # low- and medium-risk calls, a refusal, a drift
    python3 quickstart.py --high-risk  # and a high-risk call, which waits for an approver
"""

from __future__ import annotations

import asyncio
import sys

from agentvault import ArxError, Client, governed

arx = Client.from_env()


@governed(connector="salesforce", action="account.read", risk="low", summary=lambda account_id: f"account {account_id}")
async def fetch_account(account_id: str) -> dict:
    # A real agent calls Salesforce here, with
    # headers={"Authorization": f"Bearer {arx.credential}"}.
    # print() and logging show the credential as REDACTED (only an f-string,
    # as in the header above, gives the token itself).
    print("  fetching account", account_id, "with", arx.credential)
    return {"id": account_id, "call": arx.current_call.id}


@governed(connector="warehouse", action="orders.query", risk="medium")
def order_history(account_id: str) -> list:
    return [{"account": account_id, "order": 1}]


@governed(connector="salesforce", action="account.update", risk="high", summary=lambda account_id, note: f"note on {account_id}")
async def add_note(account_id: str, note: str) -> None:
    print(f"  approved: writing a note on {account_id}")


@governed(connector="hubspot", action="contact.read")
async def hubspot_contact(contact_id: str) -> dict:
    raise AssertionError("never runs: hubspot is not on the manifest")


@governed(connector="salesforce", action="account.merge")
async def merge_accounts(a: str, b: str) -> None:
    pass  # not declared under salesforce: drift, recorded, then allowed (on_drift: record)


async def main(high_risk: bool) -> int:
    print("account:", await fetch_account("0017"))
    print("orders:", await asyncio.to_thread(order_history, "0017"))
    try:
        await hubspot_contact("c-1")
    except ArxError as e:
        print(f"refused: {e.code}, recorded as call {e.call_id}")
    await merge_accounts("0017", "0018")
    print("merged (drift, recorded)")
    if high_risk:
        print("high-risk call: waiting for a named approver ...")
        try:
            await add_note("0017", "met at the conference")
        except ArxError as e:
            print(f"not approved: {e.code}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main("--high-risk" in sys.argv[1:])))
