"""Receivers that audit what happens however it is triggered (pages, API, admin, shell):
sign-ins, password changes (which also revoke API tokens), projects, memberships and deletions."""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models import QuerySet
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from audit.models import AuditEntry
from audit.trail import in_larger_deletion, record

A = AuditEntry.Action


@receiver(user_logged_in, dispatch_uid="audit-login")
def _logged_in(sender, request, user, **kwargs):
    record(A.LOGIN, request=request, actor=user)


@receiver(user_logged_out, dispatch_uid="audit-logout")
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        record(A.LOGOUT, request=request, actor=user)


@receiver(user_login_failed, dispatch_uid="audit-login-failed")
def _login_failed(sender, credentials, request=None, **kwargs):
    """Django has already masked the password. The name typed is kept only when it is an account's username or
    e-mail: a name matching no account may be a password typed into the wrong field."""
    typed = str(credentials.get("username") or credentials.get("email") or "")
    User = get_user_model()
    field = "email__iexact" if "@" in typed else "username__iexact"
    matches = list(User.objects.filter(**{field: typed})[:2]) if typed else []
    user = matches[0] if len(matches) == 1 else None
    record(A.LOGIN_FAILED, request=request, actor=user, actor_username=typed[:150] if matches else "",
           details={"account_exists": bool(matches)})


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="audit-password-changed")
def _password_changed(sender, instance, created, **kwargs):
    """A new password (change, reset, admin, ``changepassword``) revokes the user's API tokens.

    ``set_password()`` leaves the raw password in ``_password`` until the save completes; the re-hash Django does
    on a successful log-in (hasher upgrade) clears it before saving, so that one does not count."""
    if created or getattr(instance, "_password", None) is None:
        return
    from rest_framework.authtoken.models import Token

    revoked = Token.objects.filter(user_id=instance.pk).delete()[0]
    record(A.PASSWORD_CHANGED, target=instance, details={"tokens_revoked": revoked})
    if revoked:
        record(A.TOKEN_REVOKED, target=instance, details={"reason": "password changed"})


# --------------------------------------------------------------------------------------------- projects
def _project_receivers():
    from datasets_app.models import Dataset
    from evaluation_app.models import Evaluation
    from piggyback.models import Membership, Project
    from training_app.models import TrainingRun

    @receiver(post_save, sender=Project, dispatch_uid="audit-project-created", weak=False)
    def _project_created(sender, instance, created, **kwargs):
        if created:
            record(A.PROJECT_CREATED, project=instance, target=instance)

    @receiver(pre_save, sender=Membership, dispatch_uid="audit-membership-before", weak=False)
    def _membership_before(sender, instance, **kwargs):
        instance._audit_old_role = (
            Membership.objects.filter(pk=instance.pk).values_list("role", flat=True).first() if instance.pk else None)

    @receiver(post_save, sender=Membership, dispatch_uid="audit-membership-saved", weak=False)
    def _membership_saved(sender, instance, created, **kwargs):
        old = getattr(instance, "_audit_old_role", None)
        if created:
            record(A.MEMBER_ADDED, project=instance.project, target=instance.user,
                   details={"role": instance.role})
        elif old and old != instance.role:
            record(A.MEMBER_ROLE_CHANGED, project=instance.project, target=instance.user,
                   details={"from": old, "to": instance.role})

    deleted = {Project: A.PROJECT_DELETED, Dataset: A.DATASET_DELETED, TrainingRun: A.RUN_DELETED,
               Evaluation: A.EVALUATION_DELETED, Membership: A.MEMBER_REMOVED}

    def _deleted(sender, instance, origin=None, **kwargs):
        """Audit what was deleted on purpose (the object itself, or a selection of them in the admin), not
        what went with it (a project's datasets, a user's memberships)."""
        direct = origin is instance or (isinstance(origin, QuerySet) and origin.model is sender
                                        and not in_larger_deletion())
        if not direct:
            return
        if sender is Project:
            record(deleted[sender], project=instance, target=instance)
            return
        project = Project.objects.filter(pk=instance.project_id).only("pk", "name").first()
        if sender is Membership:
            user = get_user_model().objects.filter(pk=instance.user_id).first()
            record(A.MEMBER_REMOVED, project=project, project_id=instance.project_id, target=user,
                   details={"role": instance.role})
            return
        record(deleted[sender], project=project, project_id=instance.project_id, target=instance)

    for model in deleted:
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"audit-deleted-{model.__name__}", weak=False)


_project_receivers()
