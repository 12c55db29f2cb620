"""allauth's account adapter, with the failed-sign-in limit keyed by the username alone.

allauth keys its per-username ``login_failed`` limit by ``"<site domain>:<username>"``. Without
``django.contrib.sites`` the site is the request's ``Host`` header, port included, so each allowed host name
(``localhost``, ``127.0.0.1``) and each port written after it (``ALLOWED_HOSTS`` ignores ports) opened a fresh
budget of guesses for the same account. PiggyBack serves one site: the key is the username (or e-mail), lower
case, whatever host the request names.
"""
from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter


class AccountAdapter(DefaultAccountAdapter):
    def _get_login_attempts_cache_key(self, request, **credentials: Any) -> str:
        login = credentials.get("email", credentials.get("username", "")) or ""
        return f"login:{login.lower()}"
