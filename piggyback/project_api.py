"""/api/v1/projects/ — CRUD on projects and their members."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from audit.models import AuditEntry
from audit.serializers import AuditEntrySerializer
from piggyback import project_services
from piggyback.api import TenantViewSetMixin
from piggyback.models import Membership, Project
from piggyback.tenancy import role_of


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    user = serializers.CharField(write_only=True, max_length=254, help_text="username or e-mail")
    role = serializers.ChoiceField(choices=Membership.Role.choices, default=Membership.Role.VIEWER)

    class Meta:
        model = Membership
        fields = ["id", "username", "user", "role", "added_at"]
        read_only_fields = ["id", "username", "added_at"]


class ProjectSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    my_role = serializers.SerializerMethodField()
    members = MembershipSerializer(source="memberships", many=True, read_only=True)

    class Meta:
        model = Project
        fields = ["id", "name", "description", "owner", "my_role", "members", "created_at"]
        read_only_fields = ["id", "owner", "my_role", "members", "created_at"]

    def get_my_role(self, obj) -> str | None:
        request = self.context.get("request")
        return role_of(request.user, obj) if request else None


class ProjectViewSet(TenantViewSetMixin, viewsets.ModelViewSet):
    queryset = Project.objects.all().order_by("-created_at")
    serializer_class = ProjectSerializer
    role_by_action = {"update": "owner", "partial_update": "owner", "destroy": "owner", "members": "viewer",
                      "audit": "owner"}

    def get_queryset(self):
        return Project.objects.for_user(self.request.user).select_related("owner").prefetch_related(
            "memberships__user"
        ).order_by("-created_at")

    def perform_create(self, serializer):
        serializer.instance = project_services.create_project(
            self.request.user, serializer.validated_data["name"], serializer.validated_data.get("description", "")
        )

    def perform_destroy(self, instance):
        project_services.delete_project(instance)

    def required_role(self, request):
        if self.action == "members" and request.method == "POST":
            return "owner"
        return super().required_role(request)

    @extend_schema(request=MembershipSerializer, responses=MembershipSerializer)
    @action(detail=True, methods=["get", "post"])
    def members(self, request, pk=None):
        """List members, or (owner) add one by username or e-mail with a role."""
        project = self.get_object()
        if request.method == "GET":
            return Response(MembershipSerializer(project.memberships.select_related("user"), many=True).data)
        ser = MembershipSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        m = project_services.add_member(project, ser.validated_data["user"], ser.validated_data["role"])
        return Response(MembershipSerializer(m).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=AuditEntrySerializer(many=True), summary="The project's audit trail (owners)",
                   parameters=[OpenApiParameter("action", str, enum=AuditEntry.Action.values,
                                                description="Only entries of this action")])
    @action(detail=True, methods=["get"])
    def audit(self, request, pk=None):
        """Who did what in this project, newest first (paginated): members and roles, deletions, downloads and
        exports, with the time, the client address and the object acted on."""
        project = self.get_object()
        entries = AuditEntry.objects.for_project(project.pk)
        wanted = request.query_params.get("action")
        if wanted:
            if wanted not in AuditEntry.Action.values:
                raise ValidationError({"action": f"Unknown action {wanted!r}; one of {', '.join(AuditEntry.Action.values)}."})
            entries = entries.filter(action=wanted)
        page = self.paginate_queryset(entries)
        return self.get_paginated_response(AuditEntrySerializer(page, many=True).data)
