"""Training pages: start (per dataset), progress (live), list per project, cancel/resume/re-run, export."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from audit import trail as audit
from datasets_app.models import Dataset
from gpu_worker.errors import AppError
from piggyback import files
from piggyback.errors import add_to_form
from piggyback.jobs import RunStatus, queue_position, queue_text
from piggyback.models import Project
from piggyback.tenancy import get_for_user, has_role
from training_app import services
from training_app.forms import StartTrainingForm
from training_app.models import TrainingRun

RUNS = TrainingRun.objects.select_related("project", "dataset", "model")


def _model_info(models) -> dict:
    return {
        m.key: {"name": m.name, "family": m.family, "task": m.task, "description": m.description,
                "default_params": m.default_params, "warning": services.memory_warning(m),
                "memory_gb": m.finetune_gpu_memory_gb, "presets": services.preset_values(m)}
        for m in models
    }


@login_required
def start(request, dataset_pk):
    dataset = get_for_user(Dataset.objects.select_related("project"), request.user, "editor", pk=dataset_pk)
    models = list(services.selectable_models())
    # a newcomer who changes nothing trains the default model with the default (Balanced) preset
    from gpu_worker.models.registry import DEFAULT_MODEL_KEY

    default_model = DEFAULT_MODEL_KEY if any(m.key == DEFAULT_MODEL_KEY for m in models) else ""
    form = StartTrainingForm(request.POST or None, models=models, initial={"preset": "balanced", "model": default_model})
    problem = services.dataset_problem(dataset)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                run = services.start_run(request.user, dataset, form.cleaned_data["model"] or None,
                                         params=form.params() or None, preset=form.cleaned_data["preset"] or None,
                                         name=form.cleaned_data.get("name", ""))
        except services.TrainingError as exc:
            add_to_form(form, exc)
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
    from datasets_app.versions import newer_version
    from training_app.model_card import model_card

    run = get_for_user(RUNS, request.user, pk=pk)
    return render(request, "training_app/detail.html", {
        "run": run, "project": run.project, "can_edit": has_role(request.user, run, "editor"),
        "warnings": (run.metrics or {}).get("warnings") or [],
        "newer_version": newer_version(run.dataset),
        "model_card": model_card(run) if run.status == RunStatus.SUCCEEDED else "",
        "queue_text": queue_text(queue_position(run)),
    })


@login_required
@require_POST
def retrain(request, pk):
    """Train again: the run's model and settings on a newer version of its dataset (the newest by default)."""
    run = get_for_user(RUNS, request.user, "editor", pk=pk)
    dataset = None
    raw = request.POST.get("dataset", "")
    if raw:
        dataset = Dataset.objects.filter(project_id=run.project_id, pk=int(raw)).first() if raw.isdigit() and int(
            raw) < 2**31 else None
        if dataset is None:
            messages.error(request, "Choose a dataset of this project.")
            return redirect("training:detail", pk=run.pk)
    try:
        with transaction.atomic():
            new = services.retrain(request.user, run, dataset)
    except services.TrainingError as exc:
        messages.error(request, str(exc))
        return redirect("training:detail", pk=run.pk)
    messages.success(request, f"Training again on {new.dataset}, with the settings of run {run.pk}.")
    return redirect("training:detail", pk=new.pk)


@login_required
def run_list(request, project_pk):
    project = get_for_user(Project, request.user, pk=project_pk)
    runs = TrainingRun.objects.for_user(request.user).filter(project=project).select_related("model", "dataset")
    ready = project.datasets.filter(status=RunStatus.SUCCEEDED).order_by("-created_at")
    return render(request, "training_app/list.html", {
        "project": project, "runs": runs, "ready_datasets": ready,
        "can_edit": has_role(request.user, project, "editor"),
    })


def _action(request, pk, fn, done_message):
    run = get_for_user(RUNS, request.user, "editor", pk=pk)
    try:
        with transaction.atomic():
            out = fn(request.user, run)
    except AppError as exc:
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
    run = get_for_user(RUNS, request.user, pk=pk)
    try:
        name = services.export_zip(run)
    except AppError as exc:
        messages.error(request, str(exc))
        return redirect("training:detail", pk=run.pk)
    audit.record(audit.A.MODEL_EXPORTED, project=run.project, target=run, details={"model": run.model.key})
    return files.serve_file(name, download_name=f"piggyback-run-{run.pk}-{run.model.key}.zip", as_attachment=True)
