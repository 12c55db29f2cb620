"""Writing audit entries: ``record(action, ...)`` from anywhere (views, services, signal receivers).

The current request (set by :class:`audit.middleware.AuditRequestMiddleware`) supplies who, from where and
through what (page, API, admin) when the caller does not pass them; outside a request (workers, management
commands) the entry's actor is empty ("system"). Entries are written in the caller's transaction, so an action
that is rolled back leaves no entry either.
"""
from __future__ import annotations

import contextlib
import contextvars
import ipaddress

from audit.models import AuditEntry

A = AuditEntry.Action  # audit.trail.A.DATASET_DELETED ...

_request: contextvars.ContextVar = contextvars.ContextVar("audit_request", default=None)
_cascade: contextvars.ContextVar = contextvars.ContextVar("audit_cascade", default=False)

SECRET_KEYS = {"password", "password1", "password2", "old_password", "new_password", "token", "key", "secret",
               "authorization", "cookie", "sessionid", "csrftoken"}


def current_request():
    return _request.get()


@contextlib.contextmanager
def request_context(request):
    token = _request.set(request)
    try:
        yield
    finally:
        _request.reset(token)


@contextlib.contextmanager
def part_of_larger_deletion():
    """Deletions inside this block belong to an action that is audited as a whole (a project's deletion)."""
    token = _cascade.set(True)
    try:
        yield
    finally:
        _cascade.reset(token)


def in_larger_deletion() -> bool:
    return _cascade.get()


def client_ip(request) -> str | None:
    """The client's address the way the log-in rate limit sees it (allauth: TRUSTED_PROXY_COUNT / header)."""
    if request is None:
        return None
    try:
        from allauth.account.adapter import get_adapter

        ip = get_adapter(request).get_client_ip(request)
    except Exception:  # no usable address: REMOTE_ADDR or nothing
        ip = request.META.get("REMOTE_ADDR")
    try:
        return str(ipaddress.ip_address((ip or "").strip()))
    except ValueError:
        return None


def _via(request) -> str:
    if request is None:
        return "system"
    path = getattr(request, "path", "") or ""
    if path.startswith("/api/"):
        return "api"
    if path.startswith("/admin/"):
        return "admin"
    return "page"


def _clean(details: dict | None) -> dict:
    """Drop anything that looks secret, whatever a caller passes."""
    out = {}
    for key, value in (details or {}).items():
        if str(key).lower() in SECRET_KEYS:
            continue
        out[str(key)] = value if isinstance(value, (int, float, bool, type(None))) else str(value)[:300]
    return out


def _user_of(request):
    user = getattr(request, "user", None) if request is not None else None
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def record(action: str, *, project=None, target=None, details: dict | None = None, request=None, actor=None,
           actor_username: str = "", project_id=None, project_name: str = ""):
    """Append one entry. ``project`` (or ``project_id`` + ``project_name``) scopes it to a project's trail;
    ``target`` is the object acted on (its type, id and name are copied)."""
    request = request if request is not None else current_request()
    actor = actor if actor is not None else _user_of(request)
    if project is not None:
        project_id, project_name = project.pk, project_name or str(project)
    entry = AuditEntry(
        action=action,
        actor_id=getattr(actor, "pk", None),
        actor_username=(actor_username or getattr(actor, "username", "") or "")[:150],
        ip=client_ip(request),
        user_agent=(request.META.get("HTTP_USER_AGENT", "") if request is not None else "")[:200],
        via=_via(request),
        project_id=project_id,
        project_name=(project_name or "")[:120],
        details=_clean(details),
    )
    if target is not None:
        entry.target_type = target._meta.verbose_name[:40]
        entry.target_id = str(target.pk or "")[:64]
        entry.target_repr = str(target)[:200]
    entry.save()
    return entry
