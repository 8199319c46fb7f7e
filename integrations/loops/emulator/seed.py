"""Demo data for emulator teams, with fixed ids that docs and tests can name.

``seed_demo`` gives a team custom properties, two mailing lists, three transactional templates
(two published), four contacts (one suppressed) and a list of dedicated sending IPs. Every id
below is a constant, so an example can say ``transactionalId = RECEIPT_TEMPLATE_ID`` and keep
working after a reset. The ids have the cuid-like shape of real Loops ids.
"""

from __future__ import annotations

from typing import Final

from .records import Contact, Template
from .team import Team

__all__ = [
    "ADA_CONTACT_ID",
    "ADA_EMAIL",
    "ADA_USER_ID",
    "ALAN_CONTACT_ID",
    "ALAN_EMAIL",
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
    "seed_demo",
]

#: Team name → API key of the teams an emulator makes when it is given no keys. The names
#: match the accounts ``luabridge run --emulator`` configures.
DEMO_KEYS: Final = {
    "default": "demo_key_default",
    "marketing": "demo_key_marketing",
    "transactional": "demo_key_transactional",
}

#: Public list "Newsletter".
NEWSLETTER_LIST_ID: Final = "clistnewsletter0000000001"
#: Private list "Beta testers".
BETA_LIST_ID: Final = "clistbetatesters000000002"

#: Published "Order receipt": requires ``order_id`` and ``amount``; attachments enabled.
RECEIPT_TEMPLATE_ID: Final = "ctxreceipt000000000000001"
#: Published "Welcome": one optional variable, ``first_name``.
WELCOME_TEMPLATE_ID: Final = "ctxwelcome000000000000002"
#: Unpublished draft "Password reset" (``reset_url``): sending it gives a 400.
PASSWORD_RESET_TEMPLATE_ID: Final = "ctxpasswordreset000000003"

ADA_CONTACT_ID: Final = "ccontactada00000000000001"
ADA_EMAIL: Final = "ada@example.com"
ADA_USER_ID: Final = "user_ada"
GRACE_CONTACT_ID: Final = "ccontactgrace000000000002"
GRACE_EMAIL: Final = "grace@example.com"
ALAN_CONTACT_ID: Final = "ccontactalan0000000000003"
ALAN_EMAIL: Final = "alan@example.com"
#: Barbara's address is on the suppression list.
BARBARA_CONTACT_ID: Final = "ccontactbarbara0000000004"
BARBARA_EMAIL: Final = "barbara@example.com"

#: Documentation-range addresses (RFC 5737), so they can never be mistaken for real ones.
SENDING_IPS: Final = ("203.0.113.10", "203.0.113.11", "198.51.100.25")


def seed_demo(team: Team) -> None:
    """Fill ``team`` with the demo data; it must be empty of the seeded names and ids."""
    team.add_property("plan", "string")
    team.add_property("company", "string")
    team.add_property("seats", "number")
    team.add_property("signupDate", "date")
    team.add_property("vip", "boolean")

    team.add_list(
        NEWSLETTER_LIST_ID, "Newsletter", description="Monthly product news.", is_public=True
    )
    team.add_list(BETA_LIST_ID, "Beta testers", description=None, is_public=False)

    team.add_template(
        Template(
            RECEIPT_TEMPLATE_ID,
            "Order receipt",
            published=True,
            data_variables=("order_id", "amount"),
            attachments_enabled=True,
            created_at="2025-01-10T09:00:00.000Z",
            updated_at="2025-01-12T16:30:00.000Z",
        )
    )
    team.add_template(
        Template(
            WELCOME_TEMPLATE_ID,
            "Welcome",
            published=True,
            data_variables=("first_name",),
            optional_variables=("first_name",),
            created_at="2025-02-03T10:15:00.000Z",
            updated_at="2025-02-03T10:15:00.000Z",
        )
    )
    team.add_template(
        Template(
            PASSWORD_RESET_TEMPLATE_ID,
            "Password reset",
            published=False,
            data_variables=("reset_url",),
            created_at="2025-03-20T14:00:00.000Z",
            updated_at="2025-03-21T08:45:00.000Z",
        )
    )

    team.add_contact(
        Contact(
            ADA_CONTACT_ID,
            ADA_EMAIL,
            first_name="Ada",
            last_name="Lovelace",
            user_id=ADA_USER_ID,
            user_group="founders",
            created_at="2024-06-01T09:00:00.000Z",
            custom={
                "plan": "pro",
                "company": "Analytical Engines",
                "seats": 5,
                "signupDate": "2024-06-01",
                "vip": True,
            },
            lists={NEWSLETTER_LIST_ID: True, BETA_LIST_ID: True},
        )
    )
    team.add_contact(
        Contact(
            GRACE_CONTACT_ID,
            GRACE_EMAIL,
            first_name="Grace",
            last_name="Hopper",
            created_at="2024-07-15T12:00:00.000Z",
            custom={"plan": "free", "company": "Compilers Inc"},
            lists={NEWSLETTER_LIST_ID: True},
        )
    )
    team.add_contact(
        Contact(
            ALAN_CONTACT_ID,
            ALAN_EMAIL,
            first_name="Alan",
            last_name="Turing",
            created_at="2024-08-20T08:30:00.000Z",
            custom={"plan": "team", "seats": 12},
        )
    )
    team.add_contact(
        Contact(
            BARBARA_CONTACT_ID,
            BARBARA_EMAIL,
            first_name="Barbara",
            last_name="Liskov",
            created_at="2024-09-02T17:45:00.000Z",
            custom={"plan": "free"},
            suppressed=True,
        )
    )
    team.sending_ips.extend(SENDING_IPS)
