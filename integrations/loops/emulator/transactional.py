"""Transactional email rules: validating a send and paging through templates.

``check_send`` reproduces the 400/404 shapes section 2.10 of the Loops reference lists (flat
``path``, nested ``error``, the "not sendable" ``reason`` form and the data-variable form with
``transactionalId``). ``paginate`` implements the cursor pagination both listing endpoints use.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from .contacts import check_email
from .errors import ApiError, api_error
from .records import Template

__all__ = [
    "DEFAULT_PER_PAGE",
    "MAX_PER_PAGE",
    "MIN_PER_PAGE",
    "CheckedSend",
    "Page",
    "check_send",
    "paginate",
    "parse_per_page",
]

DEFAULT_PER_PAGE: Final = 20
MIN_PER_PAGE: Final = 10
MAX_PER_PAGE: Final = 50

_MISSING_VARIABLES_OBJECT: Final = (
    "There are required fields for this email. You need to include a 'dataVariables' object "
    "with the required fields."
)

T = TypeVar("T")


@dataclass(slots=True)
class CheckedSend:
    """A send that passed every check, ready to record."""

    template: Template
    email: str
    data_variables: dict[str, Any]
    attachments: list[dict[str, Any]]
    add_to_audience: bool


def _flat(path: str, message: str) -> ApiError:
    return api_error(400, message, path=path)


def _nested(status: int, path: str, message: str) -> ApiError:
    return api_error(status, message, error={"path": path, "message": message})


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, int | float) and not isinstance(value, bool)
    )


def _check_variable(name: str, value: Any) -> None:
    # Values are strings or numbers, or for array variables a list of flat objects of them.
    if _is_scalar(value):
        return
    if isinstance(value, list) and all(
        isinstance(item, dict) and all(_is_scalar(v) for v in item.values()) for item in value
    ):
        return
    raise _nested(
        400,
        f"dataVariables.{name}",
        f"Data variable `{name}` must be a string, a number, or an array of objects whose "
        "values are strings or numbers.",
    )


def _check_attachments(value: Any, template: Template) -> list[dict[str, Any]]:
    if value is None or value == []:
        return []
    if not template.attachments_enabled:
        raise _flat(
            "attachments",
            "Attachments are not enabled for this account. Ask Loops support to enable them, "
            "or send the email without `attachments`.",
        )
    if not isinstance(value, list):
        raise _flat("attachments", "`attachments` must be an array of objects.")
    kept: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        where = f"attachments[{index}]"
        if not isinstance(item, dict):
            raise _nested(400, where, f"`{where}` must be an object.")
        for key in ("filename", "contentType", "data"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise _nested(
                    400,
                    f"{where}.{key}",
                    f"`{where}.{key}` is required: each attachment needs filename, "
                    "contentType and base64 data.",
                )
        try:
            size = len(base64.b64decode(item["data"], validate=True))
        except (binascii.Error, ValueError):
            raise _nested(400, f"{where}.data", f"`{where}.data` is not valid base64.") from None
        kept.append(
            {"filename": item["filename"], "contentType": item["contentType"], "size": size}
        )
    return kept


def check_send(body: Mapping[str, Any], templates: Mapping[str, Template]) -> CheckedSend:
    """Validate a ``POST /transactional`` body against the team's templates."""
    transactional_id = body.get("transactionalId")
    if not isinstance(transactional_id, str) or not transactional_id:
        raise _flat(
            "transactionalId",
            "`transactionalId` is required: the id of a published transactional email "
            "(GET /transactional lists them).",
        )
    email = body.get("email")
    if email is None or email == "":
        raise _flat("email", "`email` is required: the address to send the email to.")
    try:
        email = check_email(email)
    except ApiError:
        raise _flat("email", "Invalid email address.") from None

    template = templates.get(transactional_id)
    if template is None:
        raise _nested(404, "transactionalId", "Transactional email not found.")
    if not template.published:
        raise api_error(
            400,
            "Transactional email is not published. Publish it in the editor before sending.",
            error={"path": "transactionalId", "reason": "Transactional email is not published."},
        )

    add_to_audience = body.get("addToAudience", False)
    if add_to_audience is None:
        add_to_audience = False
    if not isinstance(add_to_audience, bool):
        raise _flat("addToAudience", "`addToAudience` must be true or false.")

    attachments = _check_attachments(body.get("attachments"), template)

    variables = body.get("dataVariables")
    if variables is None:
        if template.required_variables:
            raise _flat("dataVariables", _MISSING_VARIABLES_OBJECT)
        variables = {}
    if not isinstance(variables, dict):
        raise _flat("dataVariables", "`dataVariables` must be an object of variable values.")
    for name, value in variables.items():
        _check_variable(name, value)
    # An empty string is how optional variables are left blank, so a required one needs more.
    missing = [v for v in template.required_variables if variables.get(v) in (None, "")]
    if missing:
        message = f"Missing required data variable(s): {', '.join(missing)}"
        raise api_error(
            400,
            message,
            error={"path": "dataVariables", "message": message},
            transactionalId=template.id,
        )
    return CheckedSend(template, email, dict(variables), attachments, add_to_audience)


def parse_per_page(raw: str | None, *, bare: bool = False) -> int:
    """The ``perPage`` query value as an int from 10 to 50 (default 20), else a 400.

    ``bare`` gives the newer endpoint's error body, which has no ``success`` key.
    """
    if raw is None or raw == "":
        return DEFAULT_PER_PAGE
    value = int(raw) if raw.isdigit() else -1
    if MIN_PER_PAGE <= value <= MAX_PER_PAGE:
        return value
    message = (
        f"Invalid `perPage` value {raw!r}: use a whole number from {MIN_PER_PAGE} to "
        f"{MAX_PER_PAGE} (default {DEFAULT_PER_PAGE})."
    )
    raise ApiError(400, {"message": message}) if bare else api_error(400, message)


@dataclass(slots=True)
class Page:
    """One page of items and the ``pagination`` object that describes it."""

    items: list[Any]
    pagination: dict[str, Any]


def paginate(
    items: Sequence[T],
    *,
    per_page: int,
    cursor: str | None,
    key: Callable[[T], str],
    next_url: Callable[[str], str],
    bare: bool = False,
) -> Page:
    """Cut ``items`` into the page that starts at ``cursor``.

    A cursor is the ``key`` of the first item of its page, as ``nextCursor`` hands it out.
    """
    start = 0
    if cursor:
        keys = [key(item) for item in items]
        if cursor not in keys:
            message = (
                f"Invalid cursor {cursor!r}: pass the `nextCursor` value of a previous page, "
                "or leave it out to start from the beginning."
            )
            raise ApiError(400, {"message": message}) if bare else api_error(400, message)
        start = keys.index(cursor)
    chunk = list(items[start : start + per_page])
    following = start + per_page
    next_cursor = key(items[following]) if following < len(items) else None
    return Page(
        chunk,
        {
            "totalResults": len(items),
            "returnedResults": len(chunk),
            "perPage": per_page,
            "totalPages": -(-len(items) // per_page),
            "nextCursor": next_cursor,
            "nextPage": next_url(next_cursor) if next_cursor is not None else None,
        },
    )
