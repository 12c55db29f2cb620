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


def summarised_deletion(request, objs, parts_of):
    """What the admin's delete confirmation shows, as one line per object with a count per kind of row it takes
    along, instead of Django's list of every related object: a VQAv2-sized project takes about a million rows
    with it, and listing them all made the page slow and huge. Returns ``get_deleted_objects``' tuple.

    ``parts_of(obj)`` yields (model, queryset) of the rows deleted with ``obj``, or (model, queryset, True) for
    rows that block its deletion (shown as protected, as Django does)."""
    from django.contrib.auth import get_permission_codename

    to_delete, model_count, perms_needed, protected = [], {}, set(), []
    for obj in objs:
        parts = []
        for model, qs, *blocks in parts_of(obj):
            opts = model._meta
            if blocks:
                protected += [f"{opts.verbose_name.capitalize()}: {row}" for row in qs[:50]]
                continue
            n = qs.count()
            if not n:
                continue
            parts.append(f"{n:,} {opts.verbose_name if n == 1 else opts.verbose_name_plural}")
            model_count[opts.verbose_name_plural] = model_count.get(opts.verbose_name_plural, 0) + n
            if not request.user.has_perm(f"{opts.app_label}.{get_permission_codename('delete', opts)}"):
                perms_needed.add(opts.verbose_name)
        line = f"{obj._meta.verbose_name.capitalize()}: {obj}"
        to_delete.append(line + (f" (with {', '.join(parts)}, and its stored files)" if parts else
                                 " (and its stored files)"))
    if objs:
        opts = objs[0]._meta
        model_count[opts.verbose_name_plural] = model_count.get(opts.verbose_name_plural, 0) + len(objs)
    return to_delete, model_count, perms_needed, protected


class CountedDeletionAdmin:
    """A ModelAdmin mixin: the delete confirmation shows :func:`summarised_deletion` of ``deletion_parts(obj)``,
    and single and bulk deletes go through ``delete_with(obj)`` (the service the pages and the API use) instead
    of the ORM cascade."""

    def deletion_parts(self, obj):
        raise NotImplementedError

    def delete_with(self, obj) -> None:
        raise NotImplementedError

    def get_deleted_objects(self, objs, request):
        return summarised_deletion(request, list(objs), self.deletion_parts)

    def delete_model(self, request, obj):
        self.delete_with(obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_with(obj)
