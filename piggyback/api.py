"""API building blocks shared by the apps: tenancy-aware viewsets (the token endpoint: piggyback/auth_api.py)."""
from __future__ import annotations

from rest_framework import permissions

from piggyback.tenancy import require_role


class TenantAccess(permissions.BasePermission):
    """Object-level role check; the queryset (``for_user``) already hides other tenants (404)."""

    def has_object_permission(self, request, view, obj):
        require_role(request.user, obj, view.required_role(request))
        return True


class TenantViewSetMixin:
    """Querysets through ``for_user``; reads need viewer, writes editor, deletes owner by default."""

    permission_classes = [permissions.IsAuthenticated, TenantAccess]
    role_by_action: dict[str, str] = {}

    def filter_queryset(self, queryset):
        """Query-parameter filters (``filterset_class``, validated: 400 when invalid) apply to lists only."""
        if getattr(self, "action", None) != "list":
            return queryset
        return super().filter_queryset(queryset)

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

