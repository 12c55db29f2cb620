"""OpenAPI generation.

* :class:`PiggyBackAutoSchema`: every operation says which rate limit applies to it and documents the 429.
* :func:`document_common_errors` (postprocessing hook): the error answers every operation can give, documented
  once for all. Views document their success bodies and the errors specific to them (a 409 "not finished", a
  507); the codes that come from the shared machinery (authentication, the access helper, validation, the
  exception handler, throttling) are added here for every operation, so a new endpoint is documented without
  repeating them.
"""
from __future__ import annotations

from drf_spectacular.openapi import AutoSchema


def limit_note(view, method: str) -> str:
    from piggyback import throttling

    if getattr(view, "throttle_scope", None) == "none":
        from piggyback.auth_api import login_limits_text

        return f"**Rate limit:** failed sign-ins, shared with the log-in page: {login_limits_text()}."
    scope = throttling.scope_for(view, method)
    rate = throttling.default_rate(scope) if scope else None
    if not rate:
        return ""
    count, seconds = throttling.parse_rate(rate)
    return (f"**Rate limit ({scope}):** {throttling.describe(count, seconds)} per user for "
            f"{throttling.LABELS[scope]} (staff can raise one user's limits). Past it: 429 with `Retry-After`.")


class PiggyBackAutoSchema(AutoSchema):
    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if not operation:
            return operation
        note = limit_note(self.view, self.method)
        if note:
            operation["description"] = f"{operation.get('description') or ''}\n\n{note}".strip()
            operation.setdefault("responses", {}).setdefault(
                "429", {"description": "Too many requests: the message and `Retry-After` say when to retry."})
        return operation


ERROR_SCHEMA = {
    "type": "object",
    "description": "`detail` says what went wrong and what to do; `field`/`errors` name the request fields "
                   "concerned. Validation errors of a request body map each field to its messages.",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "field": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": True,
}

COMMON = {
    "400": "Invalid request: a parameter, field or file is not usable (the message says which and why).",
    "401": "No or invalid credentials; send `Authorization: Token <token>` (see `WWW-Authenticate`).",
    "403": "Signed in, but your role in this project does not allow this.",
    "404": "Not found, or not in one of your projects.",
    "405": "Method not allowed on this URL.",
    "429": "Too many requests; retry after the number of seconds in `Retry-After`.",
}
WITH_BODY = {
    "409": "The object is not in a state that allows this (e.g. not finished, already running, in use).",
    "413": "The upload is larger than the server accepts.",
    "415": "Unsupported request content type.",
}
UNSAFE = {"post", "put", "patch", "delete"}


def document_common_errors(result, generator, request, public):
    """drf-spectacular POSTPROCESSING_HOOK: add the shared error answers to every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = dict(COMMON)
            if method in UNSAFE:
                codes.update(WITH_BODY)
            for code, description in codes.items():
                operation["responses"].setdefault(code, {"description": description, "content": ref})
    return result
