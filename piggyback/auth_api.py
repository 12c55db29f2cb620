"""``/api/v1/auth/token/``: sign in for a token (POST) and revoke it (DELETE).

Failed sign-ins are limited exactly like the pages' log-in form: allauth's ``login_failed`` rate limits
(``ACCOUNT_RATE_LIMITS``: per client address and per username typed, shared with the pages, state in the
cache). Past the limit the answer is 429 with ``Retry-After``, even for the right password, until the window
has passed. A successful sign-in does not count against the limit.
"""
from __future__ import annotations

import math
import time

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import NotFound, Throttled, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.models import AuditEntry
from audit.trail import record


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=254, trim_whitespace=False, help_text="Username or e-mail")
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


def _login_failed_key(adapter, request, username: str) -> str:
    return adapter._get_login_attempts_cache_key(request, username=username)


def login_retry_after(request, username: str) -> int:
    """Seconds until one more sign-in attempt is allowed (allauth keeps the attempts' timestamps)."""
    from allauth.account.adapter import get_adapter
    from allauth.core.internal import ratelimit
    from django.core.cache import cache

    adapter = get_adapter(request)
    key = _login_failed_key(adapter, request, username)
    now, wait = time.time(), 1.0
    for rate in ratelimit.get_rates(app="allauth.account", action="login_failed"):
        try:
            history = cache.get(ratelimit.get_cache_key(request, app="allauth.account", action="login_failed",
                                                        rate=rate, key=key), [])
        except Exception:  # a rate keyed in a way we cannot rebuild: assume its full window
            wait = max(wait, rate.duration)
            continue
        recent = [ts for ts in history if ts > now - rate.duration]
        if len(recent) >= rate.amount:
            wait = max(wait, recent[rate.amount - 1] + rate.duration - now)
    return math.ceil(wait)


def login_limits_text() -> str:
    from allauth.core.internal import ratelimit

    parts = []
    for rate in ratelimit.get_rates(app="allauth.account", action="login_failed"):
        per = {"ip": "client address", "key": "username", "user": "user"}.get(rate.per, rate.per)
        parts.append(f"{rate.amount} failed sign-ins per {int(rate.duration)} s per {per}")
    return "; ".join(parts) or "no limit configured"


class TokenView(APIView):
    """POST username + password → {"token": "..."}; send it as ``Authorization: Token <token>``.
    DELETE (signed in) revokes your token; a password change or reset revokes it too."""

    throttle_scope = "none"  # sign-in attempts are limited by allauth's login_failed limits instead

    def get_permissions(self):
        if self.request.method == "DELETE":
            return [permissions.IsAuthenticated()]
        return [permissions.AllowAny()]

    def get_authenticators(self):
        if getattr(self, "request", None) is not None and self.request.method == "POST":
            return []  # signing in needs no session (and so no CSRF token); credentials are in the body
        return super().get_authenticators()

    @extend_schema(
        request=TokenRequestSerializer,
        responses={200: inline_serializer("TokenResponse", {"token": serializers.CharField()}),
                   400: OpenApiResponse(description="Wrong username or password, or a field missing"),
                   429: OpenApiResponse(description="Too many failed sign-ins; retry after Retry-After seconds")},
        auth=[],
    )
    def post(self, request, *args, **kwargs):
        from allauth.account.adapter import get_adapter

        ser = TokenRequestSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        username, password = ser.validated_data["username"], ser.validated_data["password"]
        django_request = request._request
        try:
            user = get_adapter(django_request).authenticate(django_request, username=username, password=password)
        except DjangoValidationError:  # allauth: too many failed attempts from here or for this username
            wait = login_retry_after(django_request, username)
            raise Throttled(wait=wait, detail="Too many failed sign-ins.")
        if user is None or not user.is_active:  # allauth hands back an inactive account for its own page
            raise ValidationError({"non_field_errors": ["Unable to log in with provided credentials."]},
                                  code="authorization")
        token, created = Token.objects.get_or_create(user=user)
        record(AuditEntry.Action.LOGIN, request=django_request, actor=user)
        if created:
            record(AuditEntry.Action.TOKEN_CREATED, request=django_request, actor=user, target=user)
        return Response({"token": token.key})

    @extend_schema(request=None, responses={204: None, 404: OpenApiResponse(description="You have no token")},
                   summary="Revoke your API token")
    def delete(self, request, *args, **kwargs):
        deleted = Token.objects.filter(user=request.user).delete()[0]
        if not deleted:
            raise NotFound("You have no API token to revoke.")
        record(AuditEntry.Action.TOKEN_REVOKED, actor=request.user, target=request.user,
               details={"reason": "revoked by its owner"})
        return Response(status=status.HTTP_204_NO_CONTENT)
