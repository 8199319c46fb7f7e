"""The error responses of the emulated Loops API.

The rules in ``contacts.py``, ``team.py`` and ``transactional.py`` raise ``ApiError``; the app
in ``app.py`` turns it into the JSON body and status the real API would send. Keeping the body
on the exception lets each rule produce the exact shape the reference documents, including the
transactional endpoint's nested forms.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApiError", "api_error"]


class ApiError(Exception):
    """A non-2xx answer from the emulated API: an HTTP ``status`` and the JSON ``body``.

    >>> error = api_error(404, "Contact not found.")
    >>> error.status, error.body
    (404, {'success': False, 'message': 'Contact not found.'})
    """

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        message = body.get("message")
        super().__init__(f"{status}: {message}" if isinstance(message, str) else str(status))
        self.status = status
        self.body = body


def api_error(status: int, message: str, **extra: Any) -> ApiError:
    """The usual Loops error, ``{"success": false, "message": ...}`` plus any ``extra`` keys."""
    return ApiError(status, {"success": False, "message": message, **extra})
