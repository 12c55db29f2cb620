"""The one application error: a message written for the user, the field it is about, and an HTTP status.

Plain Python (no Django), so the ML code in ``gpu_worker`` raises the same type as the web services. The web
side turns it into a response in exactly one place each: ``piggyback.errors.exception_handler`` (the REST API)
and ``piggyback.errors.AppErrorMiddleware`` / ``add_to_form`` (pages). A background job records its message
as the run's user-facing error.

Pick the subclass by what the user must do, never by the endpoint that happens to raise it:

* :class:`InvalidInput` (400) - fix the request (a file, a field, a parameter);
* :class:`Conflict` (409) - the object is not in a state that allows this (not finished, already running,
  still in use);
* :class:`Unavailable` (409) - something the request needs is not on this server (weights, stored files);
* :class:`StorageFull` (507) - the disk or quota ran out; nothing already stored was touched.
"""
from __future__ import annotations


class AppError(Exception):
    """An error whose message is written for the end user (which row, which file, what to do).

    ``field`` names the request field the message is about (None: the request as a whole); ``errors`` maps
    several fields to their messages; ``status`` is the HTTP status the web layer answers with."""

    status: int = 400
    code: str = "invalid"

    def __init__(self, message: str, field: str | None = None, *, errors: dict | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.errors = dict(errors or {})
        if field and field not in self.errors:
            self.errors[field] = message
        if status is not None:
            self.status = status

    def as_dict(self) -> dict:
        """The response body: ``{"detail": ..., "code": ..., "field"?: ..., "errors"?: {...}}``."""
        body = {"detail": self.message, "code": self.code}
        if self.field:
            body["field"] = self.field
        if self.errors:
            body["errors"] = dict(self.errors)
        return body


class InvalidInput(AppError):
    status = 400
    code = "invalid"


class Conflict(AppError):
    status = 409
    code = "conflict"


class Unavailable(AppError):
    status = 409
    code = "unavailable"


class StorageFull(AppError):
    status = 507
    code = "storage_full"
