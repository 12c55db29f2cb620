from django.contrib import admin

from piggyback.models import Membership, Project, RateLimitOverride


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
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "member_count", "created_at")
    search_fields = ("name", "description", "owner__username")
    list_filter = ("created_at",)
    inlines = [MembershipInline]
    autocomplete_fields = ["owner"]

    @admin.display(description="members")
    def member_count(self, obj):
        return obj.memberships.count()


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("project", "user", "role", "added_at")
    list_filter = ("role",)
    search_fields = ("project__name", "user__username", "user__email")
