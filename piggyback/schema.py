"""OpenAPI generation: every operation says which rate limit applies to it and documents the 429."""
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
