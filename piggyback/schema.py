"""OpenAPI postprocessing: the error answers every operation can give, documented once for all.

Views document their success bodies and the errors specific to them (a 409 "not finished", a 507); the codes
that come from the shared machinery (authentication, the access helper, validation, the exception handler,
throttling) are added here for every operation, so a new endpoint is documented without repeating them.
"""
from __future__ import annotations

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
