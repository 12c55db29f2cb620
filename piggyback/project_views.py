"""Project pages: list + create, detail, members (owner only)."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from piggyback import project_services
from piggyback.models import Membership, Project
from piggyback.onboarding import first_steps
from piggyback.tenancy import get_for_user, has_role, role_of


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}


class MemberForm(forms.Form):
    user = forms.CharField(label="Username or e-mail", max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.VIEWER)


@login_required
def project_list(request):
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = project_services.create_project(request.user, form.cleaned_data["name"], form.cleaned_data["description"])
        messages.success(request, f"Project “{project.name}” created. Next: upload a dataset.")
        return redirect("projects:detail", pk=project.pk)
    projects = (
        Project.objects.for_user(request.user).select_related("owner").order_by("-created_at")
    )
    rows = [(p, role_of(request.user, p)) for p in projects]
    return render(request, "piggyback/project_list.html", {"rows": rows, "form": form})


@login_required
def project_detail(request, pk):
    project = get_for_user(Project, request.user, pk=pk)
    role = role_of(request.user, project)
    can_edit = has_role(request.user, project, "editor")
    return render(
        request,
        "piggyback/project_detail.html",
        {
            "project": project,
            "role": role,
            "can_edit": can_edit,
            "is_owner": role == "owner",
            "first_steps": first_steps(project, can_edit=can_edit),
            "memberships": project.memberships.select_related("user"),
            "member_form": MemberForm(),
        },
    )


@login_required
@require_POST
def member_add(request, pk):
    project = get_for_user(Project, request.user, "owner", pk=pk)
    form = MemberForm(request.POST)
    if form.is_valid():
        try:
            m = project_services.add_member(project, form.cleaned_data["user"], form.cleaned_data["role"])
            messages.success(request, f"{m.user.username} is now a {m.role} of this project.")
        except project_services.MemberError as exc:
            messages.error(request, str(exc))
    else:
        messages.error(request, "Type a username or e-mail and pick a role.")
    return redirect("projects:detail", pk=project.pk)


@login_required
@require_POST
def member_remove(request, pk, membership_pk):
    project = get_for_user(Project, request.user, "owner", pk=pk)
    membership = get_object_or_404(project.memberships, pk=membership_pk)
    try:
        project_services.remove_member(project, membership)
        messages.success(request, f"{membership.user.username} was removed from the project.")
    except project_services.MemberError as exc:
        messages.error(request, str(exc))
    return redirect("projects:detail", pk=project.pk)


@login_required
@require_POST
def project_delete(request, pk):
    project = get_for_user(Project, request.user, "owner", pk=pk)
    name = project.name
    project_services.delete_project(project)
    messages.success(request, f"Project “{name}” and everything in it was deleted.")
    return redirect("projects:list")
