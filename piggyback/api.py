"""API building blocks shared by the apps: tenancy-aware viewsets (the token endpoint: piggyback/auth_api.py)."""
from __future__ import annotations

from rest_framework import permissions
from rest_framework.exceptions import PermissionDenied

from piggyback.tenancy import has_role, role_of


class TenantAccess(permissions.BasePermission):
    """Object-level role check; the queryset (``for_user``) already hides other tenants (404)."""

    def has_object_permission(self, request, view, obj):
        role = view.required_role(request)
        if has_role(request.user, obj, role):
            return True
        current = role_of(request.user, obj) or "no"
        raise PermissionDenied(f"You are a {current} member of this project; this needs the {role} role.")


class TenantViewSetMixin:
    """Querysets through ``for_user``; reads need viewer, writes editor, deletes owner by default."""

    permission_classes = [permissions.IsAuthenticated, TenantAccess]
    role_by_action: dict[str, str] = {}

    def get_queryset(self):
        return self.queryset.model.objects.for_user(self.request.user).order_by(*self.queryset.query.order_by or ["-pk"])

    def required_role(self, request) -> str:
        action = getattr(self, "action", None)
        if action in self.role_by_action:
            return self.role_by_action[action]
        if request.method in permissions.SAFE_METHODS:
            return "viewer"
        if action == "destroy":
            return "owner"
        return "editor"


def require_project_role(user, project, role: str):
    if not has_role(user, project, role):
        current = role_of(user, project) or "no"
        raise PermissionDenied(f"You are a {current} member of this project; this needs the {role} role.")
