from django.contrib import admin

from piggyback.models import RateLimitOverride


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
