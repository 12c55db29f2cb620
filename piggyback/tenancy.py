"""One path for tenancy: every queryset a user sees goes through ``for_user(user)``.

A model declares ``TENANT_PATH`` (the lookup from it to its Project, "" for Project itself). Objects
outside the user's projects simply are not in the queryset, so pages, API and file views answer 404.
Roles (viewer < editor < owner) gate the actions a member may take.
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db import models
from django.shortcuts import get_object_or_404

ROLE_RANK = {"viewer": 1, "editor": 2, "owner": 3}


class TenantQuerySet(models.QuerySet):
    def for_user(self, user):
        if user is None or not user.is_authenticated:
            return self.none()
        path = getattr(self.model, "TENANT_PATH", "project")
        prefix = f"{path}__" if path else ""
        return self.filter(**{f"{prefix}memberships__user": user}).distinct()


TenantManager = models.Manager.from_queryset(TenantQuerySet)


def project_of(obj):
    path = getattr(type(obj), "TENANT_PATH", "project")
    for part in filter(None, path.split("__")):
        obj = getattr(obj, part)
    return obj


# Role lookups are cached on the user object for the request (pages and services both check; one query).
# Any membership change bumps the generation, so a cached role is never used after it changed.
_generation = [0]


def forget_roles(*_args, **_kwargs) -> None:
    _generation[0] += 1


def role_of(user, obj) -> str | None:
    """The user's role in the project ``obj`` belongs to (None: not a member, or anonymous)."""
    if user is None or not user.is_authenticated:
        return None
    project = project_of(obj)
    cache = getattr(user, "_pb_roles", None)
    if cache is None or cache[0] != _generation[0]:
        cache = (_generation[0], {})
        user._pb_roles = cache
    if project.pk not in cache[1]:
        cache[1][project.pk] = project.role_for(user)
    return cache[1][project.pk]


def has_role(user, obj, role: str) -> bool:
    current = role_of(user, obj)
    return bool(current) and ROLE_RANK[current] >= ROLE_RANK[role]


ROLE_NEEDS = {
    "viewer": "Only members of “{project}” can see this.",
    "editor": "This needs the editor role in “{project}” (editors upload, train and ask the models); "
              "you are {current}. Ask the project owner.",
    "owner": "This needs the owner role in “{project}” (owners manage members and delete); "
             "you are {current}. Ask the project owner.",
}


ROLE_ARTICLE = {"viewer": "a viewer", "editor": "an editor", "owner": "an owner"}


def require_role(user, obj, role: str) -> None:
    """Raise PermissionDenied (403) with the role's one message when the user lacks ``role``."""
    if not has_role(user, obj, role):
        current = role_of(user, obj)
        raise PermissionDenied(ROLE_NEEDS[role].format(
            project=project_of(obj).name, current=ROLE_ARTICLE.get(current, "not a member")))


def get_for_user(queryset, user, role: str = "viewer", **lookup):
    """The one way to fetch a tenant object for a user: 404 outside the user's projects (or when it does not
    exist: the two are indistinguishable on purpose), 403 without ``role``. ``queryset`` is a model or a
    queryset (for ``select_related``); ``lookup`` the filter, e.g. ``pk=pk``."""
    qs = queryset if isinstance(queryset, models.QuerySet) else queryset.objects.all()
    obj = get_object_or_404(qs.for_user(user), **lookup)
    require_role(user, obj, role)
    return obj
