"""The core models: the tenant (Project, with Memberships and their roles) and per-user API rate-limit overrides
(staff edit them in the admin; see piggyback/throttling.py)."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from piggyback.tenancy import TenantManager, forget_roles


def validate_rate(value: str) -> None:
    from piggyback.throttling import parse_rate

    if value:
        try:
            parse_rate(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


def _rate_field(label):
    return models.CharField(max_length=20, blank=True, default="", validators=[validate_rate],
                            verbose_name=f"{label} rate",
                            help_text="e.g. 5000/hour; empty = the default times the multiplier")


class RateLimitOverride(models.Model):
    """Raises (or lowers) one user's API limits: every default is multiplied by ``multiplier``, and an explicit
    rate for a class of operation replaces that class's limit altogether."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rate_limit_override")
    multiplier = models.FloatField(default=1.0, validators=[MinValueValidator(0.01)],
                                   help_text="Applied to every default limit (2 = twice as many requests)")
    read_rate = _rate_field("Read")
    write_rate = _rate_field("Write")
    predict_rate = _rate_field("Prediction")
    upload_rate = _rate_field("Upload")
    job_rate = _rate_field("Job start")
    reason = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "API rate-limit override"

    def __str__(self):
        return f"limits of {self.user}"

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        from piggyback.throttling import forget_override

        forget_override(self.user_id)

    def delete(self, *args, **kwargs):
        out = super().delete(*args, **kwargs)
        from piggyback.throttling import forget_override

        forget_override(self.user_id)
        return out

    def as_dict(self) -> dict:
        return {"multiplier": self.multiplier,
                **{scope: getattr(self, f"{scope}_rate") for scope in ("read", "write", "predict", "upload", "job")}}


class Project(models.Model):
    TENANT_PATH = ""

    name = models.CharField(max_length=120)
    description = models.TextField(blank=True, default="")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_projects"
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantManager()

    class Meta:
        db_table = "datasets_app_project"  # the table kept its name when the model moved to the core app
        ordering = ["-created_at"]

    def __str__(self):
        return self.name

    def role_for(self, user) -> str | None:
        """The membership query (uncached); access checks go through ``piggyback.tenancy``."""
        if not user or not user.is_authenticated:
            return None
        return self.memberships.filter(user=user).order_by().values_list("role", flat=True).first()


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer (read only)"
        EDITOR = "editor", "Editor (upload, train, evaluate)"
        OWNER = "owner", "Owner (members, delete)"

    TENANT_PATH = "project"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.VIEWER)
    added_at = models.DateTimeField(auto_now_add=True)

    objects = TenantManager()

    class Meta:
        db_table = "datasets_app_membership"
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="unique_membership")]
        ordering = ["project", "user__username"]

    def __str__(self):
        return f"{self.user} ({self.role}) in {self.project}"


models.signals.post_save.connect(forget_roles, sender=Membership, dispatch_uid="pb-forget-roles-save")
models.signals.post_delete.connect(forget_roles, sender=Membership, dispatch_uid="pb-forget-roles-delete")
