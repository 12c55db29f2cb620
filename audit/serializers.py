from rest_framework import serializers

from audit.models import AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer):
    action_label = serializers.CharField(source="get_action_display", read_only=True)
    actor = serializers.CharField(source="actor_username", read_only=True)

    class Meta:
        model = AuditEntry
        fields = ["id", "created_at", "action", "action_label", "actor", "ip", "via", "target_type", "target_id",
                  "target_repr", "details"]
        read_only_fields = fields
