"""agentvault: the ARX SDK for Python.

Routes every governed agent action through the ARX runtime for a per-call
credential, manager approval, drift evaluation and a hash-chained
personnel-record append::

    from agentvault import governed, Client

    arx = Client.from_env()  # ARX_TOKEN, ARX_BASE_URL, ...; becomes the default client

    @governed(connector="salesforce", action="account.read", risk="low")
    async def fetch_account(account_id: str) -> dict:
        ...  # runs once ARX issued the credential; arx.credential is this call's, and no other's

With ``ARX_LOCAL_MODE=1`` the same code runs without a server: the SDK checks
the manifest itself and keeps the record in ``arx-records/``.

The standard library is the only dependency.
"""

import logging

from .client import (
    DEFAULT_BASE_URL,
    DEFAULT_LOCAL_RECORD_DIR,
    Call,
    Client,
    Credential,
    GatewayResponse,
    default_client,
    set_default_client,
)
from .errors import ArxError, ArxUnreachableError, CompletionError, NotInGovernedCall
from .governed import governed

__version__ = "0.1.0"

# A library logs nothing unless the application configures logging.
logging.getLogger("agentvault").addHandler(logging.NullHandler())

__all__ = [
    "Client",
    "governed",
    "ArxError",
    "ArxUnreachableError",
    "CompletionError",
    "NotInGovernedCall",
    "Call",
    "Credential",
    "GatewayResponse",
    "set_default_client",
    "default_client",
    "DEFAULT_BASE_URL",
    "DEFAULT_LOCAL_RECORD_DIR",
    "__version__",
]
