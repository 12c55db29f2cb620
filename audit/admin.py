from django.contrib import admin

from audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Staff read every entry; nobody adds, changes or deletes one (the table is append-only)."""

    list_display = ("created_at", "action", "actor_username", "ip", "via", "project_name", "target_type",
                    "target_repr")
    list_filter = ("action", "via", "created_at")
    search_fields = ("actor_username", "target_repr", "project_name", "ip")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
    list_select_related = False
    actions = None

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
