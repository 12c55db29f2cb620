"""Rules for projects and members (the only place that creates or changes them)."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q

from gpu_worker.errors import InvalidInput
from piggyback.models import Membership, Project


class MemberError(InvalidInput):
    """A member cannot be added, changed or removed like this (400)."""


@transaction.atomic
def create_project(owner, name: str, description: str = "") -> Project:
    project = Project.objects.create(owner=owner, name=name.strip(), description=description.strip())
    Membership.objects.create(project=project, user=owner, role=Membership.Role.OWNER)
    return project


@transaction.atomic
def add_member(project: Project, username_or_email: str, role: str) -> Membership:
    ident = (username_or_email or "").strip()
    if not ident:
        raise MemberError("Type the username or e-mail address of the person to add.")
    if role not in Membership.Role.values:
        raise MemberError(f"Unknown role {role!r}; choose viewer, editor or owner.")
    User = get_user_model()
    users = list(User.objects.filter(Q(username__iexact=ident) | Q(email__iexact=ident))[:2])
    if not users:
        raise MemberError(f"No PiggyBack account has the username or e-mail “{ident}”. Ask them to sign up first.")
    if len(users) > 1:
        raise MemberError(f"Several accounts match “{ident}”; use the exact username instead.")
    membership, created = Membership.objects.get_or_create(project=project, user=users[0], defaults={"role": role})
    if not created and membership.role != role:
        if membership.role == Membership.Role.OWNER and role != Membership.Role.OWNER:
            _ensure_other_owner(project, membership.user)
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def _ensure_other_owner(project: Project, user) -> None:
    if not project.memberships.filter(role=Membership.Role.OWNER).exclude(user=user).exists():
        raise MemberError("A project needs at least one owner; make someone else owner first.")


def delete_project(project: Project) -> None:
    """Delete a project with everything in it, then its stored files (after the commit).

    Predictions go first, a batch at a time: a cascade would load all of them (hundreds of thousands after a
    VQAv2-sized evaluation) into this process. Training runs next: they PROTECT their dataset, so a plain
    ``project.delete()`` of a project that has runs raised ProtectedError (a 500 for the owner) instead of
    deleting."""
    from audit.trail import part_of_larger_deletion
    from datasets_app.services import delete_prefix
    from evaluation_app.models import Prediction, delete_predictions_in
    from training_app.models import TrainingRun

    pk = project.pk
    with transaction.atomic():
        with part_of_larger_deletion():  # audited as the project's deletion, not run by run
            delete_predictions_in(Prediction.objects.filter(project=project))
            TrainingRun.objects.filter(project=project).delete()
        project.delete()
        transaction.on_commit(lambda: delete_prefix(f"projects/{pk}"))


@transaction.atomic
def remove_member(project: Project, membership: Membership) -> None:
    if membership.role == Membership.Role.OWNER:
        _ensure_other_owner(project, membership.user)
    membership.delete()
