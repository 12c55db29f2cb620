from django.contrib import admin

from piggyback.admin_base import CountedDeletionAdmin
from piggyback.models import Membership, Project, RateLimitOverride
from piggyback.project_services import delete_project


@admin.register(RateLimitOverride)
class RateLimitOverrideAdmin(admin.ModelAdmin):
    """Raise one user's API limits: a multiplier for every default, or explicit rates per class."""

    list_display = ("user", "multiplier", "read_rate", "write_rate", "predict_rate", "upload_rate", "job_rate",
                    "updated_at")
    search_fields = ("user__username", "user__email", "reason")
    autocomplete_fields = ["user"]
    fieldsets = (
        (None, {"fields": ("user", "multiplier", "reason")}),
        ("Explicit rates (replace default × multiplier for that class)",
         {"fields": ("read_rate", "write_rate", "predict_rate", "upload_rate", "job_rate")}),
    )


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(CountedDeletionAdmin, admin.ModelAdmin):
    list_display = ("name", "owner", "member_count", "created_at")
    search_fields = ("name", "description", "owner__username")
    list_filter = ("created_at",)
    inlines = [MembershipInline]
    autocomplete_fields = ["owner"]

    @admin.display(description="members")
    def member_count(self, obj):
        return obj.memberships.count()

    # Deleting: counts per kind on the confirmation page, then delete_project (predictions in batches, runs
    # before their datasets, stored files after the commit) instead of the ORM cascade.
    def deletion_parts(self, project):
        from datasets_app.models import Dataset, DatasetItem, DroppedRow
        from evaluation_app.models import Evaluation, Prediction
        from training_app.models import TrainingRun

        yield Dataset, Dataset.objects.filter(project=project)
        yield DatasetItem, DatasetItem.objects.filter(dataset__project=project)
        yield DroppedRow, DroppedRow.objects.filter(dataset__project=project)
        yield TrainingRun, TrainingRun.objects.filter(project=project)
        yield Evaluation, Evaluation.objects.filter(project=project)
        yield Prediction, Prediction.objects.filter(project=project)
        yield Membership, Membership.objects.filter(project=project)

    def delete_with(self, project):
        delete_project(project)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("project", "user", "role", "added_at")
    list_filter = ("role",)
    search_fields = ("project__name", "user__username", "user__email")
