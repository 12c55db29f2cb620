"""One path for tenancy: every queryset a user sees goes through ``for_user(user)``.

A model declares ``TENANT_PATH`` (the lookup from it to its Project, "" for Project itself). Objects
outside the user's projects simply are not in the queryset, so pages, API and file views answer 404.
Roles (viewer < editor < owner) gate the actions a member may take.
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db import models

ROLE_RANK = {"viewer": 1, "editor": 2, "owner": 3}


class TenantQuerySet(models.QuerySet):
    def for_user(self, user):
        if user is None or not user.is_authenticated:
            return self.none()
        path = getattr(self.model, "TENANT_PATH", "project")
        prefix = f"{path}__" if path else ""
        return self.filter(**{f"{prefix}memberships__user": user}).distinct()

    def with_role(self, user, role: str):
        path = getattr(self.model, "TENANT_PATH", "project")
        prefix = f"{path}__" if path else ""
        allowed = [r for r, rank in ROLE_RANK.items() if rank >= ROLE_RANK[role]]
        return self.for_user(user).filter(
            **{f"{prefix}memberships__user": user, f"{prefix}memberships__role__in": allowed}
        )


TenantManager = models.Manager.from_queryset(TenantQuerySet)


def project_of(obj):
    path = getattr(type(obj), "TENANT_PATH", "project")
    for part in filter(None, path.split("__")):
        obj = getattr(obj, part)
    return obj


def role_of(user, obj) -> str | None:
    project = project_of(obj)
    if not user or not user.is_authenticated:
        return None
    return project.role_for(user)


def has_role(user, obj, role: str) -> bool:
    current = role_of(user, obj)
    return bool(current) and ROLE_RANK[current] >= ROLE_RANK[role]


def require_role(user, obj, role: str) -> None:
    """Raise PermissionDenied (403) when a member lacks the role for an action."""
    if not has_role(user, obj, role):
        current = role_of(user, obj) or "no"
        raise PermissionDenied(
            f"You are a {current} of this project; this needs the {role} role. Ask the project owner."
        )
