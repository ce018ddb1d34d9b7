"""Where the agent's reads go.

Hired (``ARX_TOKEN`` set), every read goes to the CRM through the ARX gateway,
``{ARX_BASE_URL}/gateway/salesforce/...``, with the call's credential: ARX
checks it, adds the CRM's real key (which the agent never holds), and records
the request and the response. In local-only mode (``ARX_LOCAL_MODE=1``) there
is no gateway and no system of record: reads answer from the demo data below,
the same accounts as the demo CRM of ``arx dev``, so the agent's behaviour and
its manifest can be tried before it is hired.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import httpx

from agentvault import Client

ACCOUNTS: Dict[str, Dict[str, Any]] = {
    "0017": {"id": "0017", "name": "Nordwind Logistik GmbH", "industry": "logistics", "country": "DE"},
    "0042": {"id": "0042", "name": "Alba Renewables S.L.", "industry": "energy", "country": "ES"},
    "0108": {"id": "0108", "name": "Kestrel Health Ltd", "industry": "healthcare", "country": "GB"},
}
OPPORTUNITIES: Dict[str, List[Dict[str, Any]]] = {
    "0017": [{"id": "op-1", "account": "0017", "stage": "proposal", "amount_eur": 180000}],
    "0042": [{"id": "op-2", "account": "0042", "stage": "discovery", "amount_eur": 64000},
             {"id": "op-3", "account": "0042", "stage": "negotiation", "amount_eur": 250000}],
    "0108": [],
}
CONTACTS: Dict[str, List[Dict[str, Any]]] = {
    "0017": [{"account": "0017", "name": "Jana Weber", "role": "Head of Procurement"}],
    "0042": [{"account": "0042", "name": "Lucía Ortega", "role": "CFO"}],
    "0108": [],
}


class NotFound(Exception):
    """The CRM has no such record."""


class UpstreamError(Exception):
    """The CRM, or the gateway in front of it, answered with an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


async def get(arx: Client, path: str, demo: Optional[Any]) -> Any:
    """GET path from the CRM with the current call's credential (or, in
    local-only mode, the demo data given)."""
    if arx.local_mode:
        if demo is None:
            raise NotFound(path)
        return demo
    async with httpx.AsyncClient(base_url=f"{arx.base_url}/gateway/salesforce", timeout=10.0) as h:
        r = await h.get(path, headers={"Authorization": f"Bearer {arx.credential}"})
    if r.status_code == 404:
        raise NotFound(path)
    if r.status_code != 200:
        code, message = "crm.error", r.text[:200]
        try:
            err = r.json().get("error") or {}
            if isinstance(err, dict):
                code, message = err.get("code", code), err.get("message", message)
        except ValueError:
            pass
        raise UpstreamError(r.status_code, code, message)
    return r.json()
