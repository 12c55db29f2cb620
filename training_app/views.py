"""Training pages: start (per dataset), progress (live), list per project, cancel/resume/re-run, export."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from datasets_app.models import Dataset
from datasets_app.project_views import get_project
from piggyback import files
from piggyback.jobs import RunStatus
from piggyback.tenancy import has_role
from training_app import services
from training_app.forms import StartTrainingForm
from training_app.models import TrainingRun


def get_run(user, pk, role="viewer") -> TrainingRun:
    run = get_object_or_404(TrainingRun.objects.for_user(user).select_related("project", "dataset", "model"), pk=pk)
    if not has_role(user, run, role):
        raise PermissionDenied(f"This needs the {role} role in “{run.project.name}”. Ask the project owner.")
    return run


def _model_info(models) -> dict:
    return {
        m.key: {"name": m.name, "family": m.family, "task": m.task, "description": m.description,
                "default_params": m.default_params, "warning": services.memory_warning(m),
                "memory_gb": m.finetune_gpu_memory_gb, "presets": services.preset_values(m)}
        for m in models
    }


@login_required
def start(request, dataset_pk):
    dataset = get_object_or_404(Dataset.objects.for_user(request.user).select_related("project"), pk=dataset_pk)
    if not has_role(request.user, dataset, "editor"):
        raise PermissionDenied(f"Training needs the editor role in “{dataset.project.name}”. Ask the project owner.")
    models = list(services.selectable_models())
    form = StartTrainingForm(request.POST or None, models=models, initial={"preset": "balanced"})
    problem = services.dataset_problem(dataset)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                run = services.start_run(request.user, dataset, form.cleaned_data["model"] or None,
                                         params=form.params() or None, preset=form.cleaned_data["preset"] or None,
                                         name=form.cleaned_data.get("name", ""))
        except services.TrainingError as exc:
            for field, message in exc.errors.items():
                form.add_error(field if field in form.fields else None, message)
            if not exc.errors:
                form.add_error(None, str(exc))
        else:
            messages.success(request, f"Fine-tuning of {run.model.name} has started. You can leave this page; "
                                      "it keeps running.")
            return redirect("training:detail", pk=run.pk)
    other = Dataset.objects.filter(project=dataset.project, status=RunStatus.SUCCEEDED).exclude(pk=dataset.pk)
    return render(request, "training_app/start.html", {
        "dataset": dataset, "project": dataset.project, "form": form, "models": models,
        "model_info": _model_info(models), "presets": services.presets(), "dataset_problem": problem,
        "labelled": services.labelled_count(dataset), "other_datasets": other,
    })


@login_required
def detail(request, pk):
    run = get_run(request.user, pk)
    return render(request, "training_app/detail.html", {
        "run": run, "project": run.project, "can_edit": has_role(request.user, run, "editor"),
        "warnings": (run.metrics or {}).get("warnings") or [],
    })


@login_required
def run_list(request, project_pk):
    project = get_project(request.user, project_pk)
    runs = TrainingRun.objects.for_user(request.user).filter(project=project).select_related("model", "dataset")
    ready = project.datasets.filter(status=RunStatus.SUCCEEDED).order_by("-created_at")
    return render(request, "training_app/list.html", {
        "project": project, "runs": runs, "ready_datasets": ready,
        "can_edit": project.user_can(request.user, "editor"),
    })


def _action(request, pk, fn, done_message):
    run = get_run(request.user, pk, "editor")
    try:
        with transaction.atomic():
            out = fn(request.user, run)
    except services.TrainingError as exc:
        messages.error(request, str(exc))
        return redirect("training:detail", pk=run.pk)
    messages.success(request, done_message)
    return redirect("training:detail", pk=out.pk)


@login_required
@require_POST
def cancel(request, pk):
    return _action(request, pk, services.cancel_run, "Stopping: the run saves a checkpoint and stops at its next step.")


@login_required
@require_POST
def resume(request, pk):
    return _action(request, pk, services.resume_run, "Resumed: training continues from its last checkpoint.")


@login_required
@require_POST
def rerun(request, pk):
    return _action(request, pk, services.rerun, "A new run with the same settings has started.")


@login_required
def export(request, pk):
    run = get_run(request.user, pk)
    try:
        name = services.export_zip(run)
    except services.TrainingError as exc:
        messages.error(request, str(exc))
        return redirect("training:detail", pk=run.pk)
    return files.serve_file(name, download_name=f"piggyback-run-{run.pk}-{run.model.key}.zip", as_attachment=True)
