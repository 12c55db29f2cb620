"""Per-user API rate limits by class of operation (DRF throttling, state in the shared cache).

Every API view belongs to one class: ``read`` (GET/HEAD/OPTIONS), ``write`` (other changes), and, named on the
view, ``predict`` (one question to a model), ``upload`` (a dataset upload) and ``job`` (starting a training run,
a batch evaluation or a cleaning). Viewsets name classes per action in ``throttle_scopes``; plain views set
``throttle_scope``. Defaults come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (env ``API_RATE_<CLASS>``);
staff raise one user's limits with a :class:`piggyback.models.RateLimitOverride` in the admin.

A refused request raises DRF's ``Throttled``: 429, ``Retry-After`` and a message that says when to retry.
The sign-in endpoint is limited separately, by allauth's ``login_failed`` limits (see piggyback/api.py).
"""
from __future__ import annotations

import math

from django.core.cache import cache
from rest_framework.exceptions import Throttled
from rest_framework.permissions import SAFE_METHODS
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

SCOPES = ("read", "write", "predict", "upload", "job")
LABELS = {"read": "reads", "write": "changes", "predict": "predictions", "upload": "uploads", "job": "job starts"}
PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
           "d": 86400, "day": 86400}
PERIOD_NAMES = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
OVERRIDE_CACHE_SECONDS = 60


def parse_rate(rate: str) -> tuple[int, int]:
    """'600/minute', '600/m', '100/5m', '20/hour' -> (requests, seconds)."""
    try:
        num, period = str(rate).strip().split("/")
        count = int(num)
        digits = "".join(c for c in period if c.isdigit())
        unit = period[len(digits):].strip().lower()
        seconds = (int(digits) if digits else 1) * PERIODS[unit if unit in PERIODS else unit[:1]]
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"{rate!r} is not a rate; write it as <requests>/<period>, e.g. 600/minute or 20/hour.")
    if count < 1 or seconds < 1:
        raise ValueError(f"{rate!r}: a rate needs at least one request per period.")
    return count, seconds


def describe(count: int, seconds: int) -> str:
    name = PERIOD_NAMES.get(seconds)
    return f"{count} per {name}" if name else f"{count} per {seconds} seconds"


def default_rate(scope: str) -> str | None:
    return (api_settings.DEFAULT_THROTTLE_RATES or {}).get(scope)


def scope_for(view, method: str) -> str | None:
    """The class of operation of a request to ``view`` (None: not limited here, e.g. the token endpoint)."""
    if getattr(view, "throttle_scope", None) == "none":
        return None
    scopes = getattr(view, "throttle_scopes", {}) or {}
    action = getattr(view, "action", None)
    if action in scopes:
        return scopes[action]
    if getattr(view, "throttle_scope", None):
        return view.throttle_scope
    return "read" if method.upper() in SAFE_METHODS else "write"


def _override(user) -> dict | None:
    key = f"rate-override:{user.pk}"
    found = cache.get(key)
    if found is None:
        from piggyback.models import RateLimitOverride

        row = RateLimitOverride.objects.filter(user_id=user.pk).first()
        found = row.as_dict() if row else {}
        cache.set(key, found, OVERRIDE_CACHE_SECONDS)
    return found or None


def forget_override(user_id: int) -> None:
    cache.delete(f"rate-override:{user_id}")


def rate_for(user, scope: str) -> tuple[int, int] | None:
    rate = default_rate(scope)
    if not rate:
        return None
    count, seconds = parse_rate(rate)
    override = _override(user) if user is not None and user.is_authenticated else None
    if override:
        if override.get(scope):
            return parse_rate(override[scope])
        count = max(1, math.floor(count * float(override.get("multiplier") or 1)))
    return count, seconds


class OperationThrottle(SimpleRateThrottle):
    """One sliding window per user and class of operation (DRF's history-of-timestamps algorithm)."""

    cache_format = "throttle_%(scope)s_%(ident)s"

    def __init__(self):  # the rate depends on the request (class of operation, user override)
        self.rate = None

    def get_cache_key(self, request, view):
        user = request.user
        ident = f"u{user.pk}" if user and user.is_authenticated else f"ip{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request, view):
        self.scope = scope_for(view, request.method)
        if self.scope is None:
            return True
        limits = rate_for(request.user, self.scope)
        if limits is None:
            return True
        self.num_requests, self.duration = limits
        self.rate = f"{self.num_requests}/{self.duration}s"
        if super().allow_request(request, view):
            return True
        wait = self.wait() or self.duration
        raise Throttled(wait=wait, detail=(
            f"Too many {LABELS.get(self.scope, self.scope)}: your limit is "
            f"{describe(self.num_requests, self.duration)}."))

    def wait(self):
        if not self.history:
            return self.duration
        # the oldest request in the window leaves it first; that frees one slot
        return max(1.0, self.duration - (self.now - self.history[-1]))
