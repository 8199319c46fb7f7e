"""The base models of every action's input and output (see :mod:`luabridge.action`).

They live apart from the action metadata so that declaring actions, finding packs and running a
script that calls none of them never imports pydantic's model machinery (about 30 ms of a
command's start); ``luabridge.action`` hands them out on first use.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ActionInput", "ActionResult"]


class ActionInput(BaseModel):
    """Base of every action's input model: unknown fields are refused.

    Declare an alternative spelling with
    ``Field(validation_alias=AliasChoices("canonical", "alias"))``; the field name is the
    canonical Lua name that the docs show.
    """

    # Built on first use, through `built` (see there).
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, str_strip_whitespace=False, defer_build=True
    )


class ActionResult(BaseModel):
    """Base of every action's output model: the fields every result table can carry.

    A success is ``{success = true, ...}`` with the model's own fields. A remote failure is
    ``{success = false, error = ..., code = ..., status = ..., retryable = ...}``. A dry-run
    placeholder has ``dry_run = true``.
    """

    # Built on first use, through `built` (see there).
    model_config = ConfigDict(extra="ignore", defer_build=True)

    success: bool = Field(description="true when the call did what was asked")
    error: str | None = Field(default=None, description="what went wrong, when success is false")
    code: str | None = Field(
        default=None,
        description="stable error code '<integration>.<kind>' (for example "
        "'<integration>.rate_limited'), when success is false",
    )
    status: int | None = Field(
        default=None, description="HTTP status of the failed response, when there was one"
    )
    retryable: bool | None = Field(
        default=None, description="whether trying again later can help, when success is false"
    )
    dry_run: bool | None = Field(
        default=None, description="true when this is a dry-run placeholder: nothing was sent"
    )
    delivered: Literal["unknown"] | None = Field(
        default=None,
        description="'unknown' when success is false but the request may have been carried "
        "out (the connection was lost after sending, the answer came too late); repeat it "
        "only the safe way (a send with the same idempotency_key)",
    )
    replayed: bool | None = Field(
        default=None,
        description="true when a resumed execution returns the result an earlier run of it "
        "recorded for this call: nothing was sent again",
    )
