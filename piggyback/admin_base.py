"""Admin pieces shared by every BackgroundRun model."""
from django.contrib import admin, messages

from piggyback import jobs

RUN_LIST = ("status", "progress_pct", "stage", "created_at", "finished_at")
RUN_READONLY = (
    "status", "progress", "stage", "error", "traceback", "rq_job_id", "attempts", "worker_name",
    "heartbeat_at", "created_at", "started_at", "finished_at", "cancel_requested",
)


class BackgroundRunAdmin(admin.ModelAdmin):
    list_filter = ("status", "created_at")
    readonly_fields = RUN_READONLY
    actions = ["cancel_runs"]
    date_hierarchy = "created_at"

    @admin.display(description="progress")
    def progress_pct(self, obj):
        return f"{obj.progress * 100:.0f} %"

    @admin.action(description="Cancel selected runs")
    def cancel_runs(self, request, queryset):
        n = sum(1 for row in queryset if jobs.cancel(row))
        self.message_user(request, f"{n} run(s) cancelled or asked to stop.", messages.SUCCESS)
