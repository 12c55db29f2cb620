"""The project's audit trail page (owners only; staff read every entry in the admin)."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import render

from audit.models import AuditEntry
from piggyback.models import Project
from piggyback.tenancy import get_for_user

PER_PAGE = 50


@login_required
def project_audit(request, pk):
    project = get_for_user(Project, request.user, "owner", pk=pk)
    entries = AuditEntry.objects.for_project(project.pk)
    action = request.GET.get("action", "")
    if action in AuditEntry.Action.values:
        entries = entries.filter(action=action)
    page = Paginator(entries, PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "audit/project_audit.html", {
        "project": project, "page": page, "action": action, "actions": AuditEntry.Action.choices,
    })
