"""A local emulator of the Loops REST API (v1 classic endpoints), for tests and offline use.

It answers like ``https://app.loops.so/api/v1`` as the shared Loops reference describes it:
the same paths, status codes, bodies and rate-limit headers, one team per API key, upserts,
idempotency keys, mailing lists and transactional templates seeded with fixed ids. A separate
admin API under ``/__emulator`` adds what tests need: reset, faults, a request log, teams.

>>> from integrations.loops.emulator import EmulatorServer, RECEIPT_TEMPLATE_ID
>>> with EmulatorServer() as server:
...     server.base_url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

from .admin import ADMIN_PREFIX
from .app import API_ROUTES, ConnectionCutError, EmulatorApp, create_app
from .errors import ApiError
from .faults import API_PREFIX, Fault, FaultKind
from .records import Contact, MailingList, Property, Template
from .request_log import key_fingerprint
from .seed import (
    ADA_CONTACT_ID,
    ADA_EMAIL,
    ADA_USER_ID,
    ALAN_CONTACT_ID,
    ALAN_EMAIL,
    BARBARA_CONTACT_ID,
    BARBARA_EMAIL,
    BETA_LIST_ID,
    DEMO_KEYS,
    GRACE_CONTACT_ID,
    GRACE_EMAIL,
    NEWSLETTER_LIST_ID,
    PASSWORD_RESET_TEMPLATE_ID,
    RECEIPT_TEMPLATE_ID,
    SENDING_IPS,
    WELCOME_TEMPLATE_ID,
    seed_demo,
)
from .server import EmulatorServer, EmulatorStartError, Keys, ServerStatus, serve_forever
from .state import EmulatorState
from .team import Team

__all__ = [
    "ADA_CONTACT_ID",
    "ADA_EMAIL",
    "ADA_USER_ID",
    "ADMIN_PREFIX",
    "ALAN_CONTACT_ID",
    "ALAN_EMAIL",
    "API_PREFIX",
    "API_ROUTES",
    "BARBARA_CONTACT_ID",
    "BARBARA_EMAIL",
    "BETA_LIST_ID",
    "DEMO_KEYS",
    "GRACE_CONTACT_ID",
    "GRACE_EMAIL",
    "NEWSLETTER_LIST_ID",
    "PASSWORD_RESET_TEMPLATE_ID",
    "RECEIPT_TEMPLATE_ID",
    "SENDING_IPS",
    "WELCOME_TEMPLATE_ID",
    "ApiError",
    "ConnectionCutError",
    "Contact",
    "EmulatorApp",
    "EmulatorServer",
    "EmulatorStartError",
    "EmulatorState",
    "Fault",
    "FaultKind",
    "Keys",
    "MailingList",
    "Property",
    "ServerStatus",
    "Team",
    "Template",
    "create_app",
    "key_fingerprint",
    "seed_demo",
    "serve_forever",
]
