"""The audit trail: one append-only row per security-relevant action (who, what, when, from where, on what).

Rows are never changed or deleted: ``save()`` refuses an existing row, ``delete()`` refuses, and the
queryset's ``update()`` / ``delete()`` refuse too. Nothing points at a row with a database constraint, and a row
points at its actor and project without one, so deleting a user or a project leaves its history intact (the
names are copied into the row). Nothing secret is stored: no passwords, no tokens, no file contents.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models


class AppendOnlyError(RuntimeError):
    """Audit entries are written once and never changed or deleted."""


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Audit entries cannot be changed.")

    def delete(self):
        raise AppendOnlyError("Audit entries cannot be deleted.")

    def for_project(self, project_id: int):
        return self.filter(project_id=project_id)


class AuditEntry(models.Model):
    class Action(models.TextChoices):
        LOGIN = "auth.login", "signed in"
        LOGIN_FAILED = "auth.login_failed", "sign-in failed"
        LOGOUT = "auth.logout", "signed out"
        PASSWORD_CHANGED = "auth.password_changed", "password changed"
        TOKEN_CREATED = "token.created", "API token created"
        TOKEN_REVOKED = "token.revoked", "API token revoked"
        PROJECT_CREATED = "project.created", "project created"
        PROJECT_DELETED = "project.deleted", "project deleted"
        MEMBER_ADDED = "member.added", "member added"
        MEMBER_ROLE_CHANGED = "member.role_changed", "member's role changed"
        MEMBER_REMOVED = "member.removed", "member removed"
        DATASET_DELETED = "dataset.deleted", "dataset deleted"
        RUN_DELETED = "training_run.deleted", "training run deleted"
        EVALUATION_DELETED = "evaluation.deleted", "evaluation deleted"
        DATASET_DOWNLOADED = "dataset.downloaded", "dataset file downloaded"
        MODEL_EXPORTED = "model.exported", "model exported"
        EVALUATION_DOWNLOADED = "evaluation.downloaded", "evaluation results downloaded"
        HISTORY_DOWNLOADED = "history.downloaded", "question history downloaded"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=40, choices=Action.choices, db_index=True)
    # who: the signed-in user (kept as id + name; no constraint, so deleting the user keeps the history)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
                              db_constraint=False, related_name="+")
    actor_username = models.CharField(max_length=150, blank=True, default="",
                                      help_text="Username at the time (or the name typed at a failed sign-in)")
    # from where
    ip = models.GenericIPAddressField(null=True, blank=True, verbose_name="IP address")
    user_agent = models.CharField(max_length=200, blank=True, default="")
    via = models.CharField(max_length=10, blank=True, default="", help_text="page, api, admin or system")
    # on what
    project_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    project_name = models.CharField(max_length=120, blank=True, default="")
    target_type = models.CharField(max_length=40, blank=True, default="")
    target_id = models.CharField(max_length=64, blank=True, default="")
    target_repr = models.CharField(max_length=200, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit trail"
        indexes = [models.Index(fields=["project_id", "-created_at"])]

    def __str__(self):
        who = self.actor_username or "system"
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {who} {self.get_action_display()} {self.target_repr}".strip()

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit entries cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit entries cannot be deleted.")
