"""sales-research-py: researches an account before a sales call.

Run it from this folder, as the SDK's README says::

    ARX_LOCAL_MODE=1 uvicorn app.main:app --reload     # no server: records under arx-records/

or hired, against a running ARX (``arx dev`` prints where)::

    eval "$(arx hire manifests/job_description.yaml)"  # ARX_AGENT_ID, ARX_TOKEN, ARX_BASE_URL
    uvicorn app.main:app

``POST /research?account=0017`` makes the governed calls and answers JSON:
the account, its open opportunities, its contacts (a read the job description
does not list: ARX records it as drift and lets it through) and the marketing
enrichment ARX refuses (hubspot is not on the job description; the refusal is
recorded too).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

from fastapi import FastAPI, HTTPException, Query

from agentvault import ArxError, Client, governed

from . import crm

arx = Client.from_env()  # ARX_TOKEN, ARX_BASE_URL, ARX_AGENT_ID, or ARX_LOCAL_MODE=1

app = FastAPI(title="sales-research-py", description="ARX's Python reference agent")

ACCOUNT_ID = re.compile(r"[0-9A-Za-z-]{1,32}")  # fullmatch: "$" would take a trailing newline


@governed(connector="salesforce", action="account.read", risk="low", summary=lambda account: f"account {account}")
async def fetch_account(account: str) -> Dict[str, Any]:
    return await crm.get(arx, f"/accounts/{account}", crm.ACCOUNTS.get(account))


@governed(connector="salesforce", action="opportunity.read", risk="low",
          summary=lambda account: f"opportunities of account {account}")
async def fetch_opportunities(account: str) -> List[Dict[str, Any]]:
    return await crm.get(arx, f"/accounts/{account}/opportunities", crm.OPPORTUNITIES.get(account))


# Not in the job description: drift, recorded, then allowed (on_drift: record).
@governed(connector="salesforce", action="contact.read", risk="low",
          summary=lambda account: f"contacts of account {account} (not in the job description)")
async def fetch_contacts(account: str) -> List[Dict[str, Any]]:
    return await crm.get(arx, f"/accounts/{account}/contacts", crm.CONTACTS.get(account))


# Not on the job description at all: ARX refuses it, and records the refusal.
@governed(connector="hubspot", action="contact.read", risk="low", summary=lambda account: f"hubspot contacts of {account}")
async def enrich_from_hubspot(account: str) -> Dict[str, Any]:
    raise AssertionError("never runs: hubspot is not on the job description")


def _error(e: ArxError) -> HTTPException:
    status = 403 if e.code.startswith(("manifest.", "call.", "agent.", "auth.")) else 502
    return HTTPException(status_code=status, detail={"code": e.code, "message": e.message, "hint": e.hint, "call_id": e.call_id})


@app.get("/healthz")
async def healthz() -> Dict[str, Any]:
    return {"ok": True, "mode": "local" if arx.local_mode else "hired"}


@app.post("/research")
async def research(account: str = Query(..., description="the CRM's account id, e.g. 0017")) -> Dict[str, Any]:
    if not ACCOUNT_ID.fullmatch(account):
        raise HTTPException(status_code=400, detail={"code": "request.invalid_account", "message": "account is 1 to 32 letters, digits or dashes",
                                                     "hint": "pass ?account=0017"})
    try:
        acct = await fetch_account(account)
        opps = await fetch_opportunities(account)
        contacts = await fetch_contacts(account)
    except crm.NotFound:
        raise HTTPException(status_code=404, detail={"code": "crm.not_found", "message": f"no account {account} in the CRM"}) from None
    except crm.UpstreamError as e:
        raise HTTPException(status_code=502, detail={"code": e.code, "message": e.message}) from None
    except ArxError as e:
        raise _error(e) from None
    refused = []
    try:
        await enrich_from_hubspot(account)
    except ArxError as e:
        refused.append({"connector": "hubspot", "code": e.code, "call_id": e.call_id})
    return {
        "mode": "local" if arx.local_mode else "hired",
        "source": "demo data (local-only mode: no system of record is called)" if arx.local_mode else "the CRM, through the ARX gateway",
        "account": acct,
        "opportunities": opps,
        "open_total_eur": sum(o.get("amount_eur", 0) for o in opps),
        "contacts": contacts,
        "refused": refused,
    }
