"""Evaluation pages: the ask-the-model workspace (sample / single / batch) for a fine-tuned run or a
zero-shot model, batch results, and the user's question history."""
from __future__ import annotations

import tempfile

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from audit import trail as audit
from evaluation_app import exports, services
from evaluation_app.api import filter_predictions
from evaluation_app.forms import BatchForm, DatasetEvalForm, ReviewForm, SampleForm, SingleForm
from evaluation_app.models import Evaluation, Prediction
from gpu_worker.errors import AppError
from piggyback import filters
from piggyback.errors import add_to_form
from piggyback.jobs import queue_position, queue_text
from piggyback.models import Project
from piggyback.tenancy import get_for_user, has_role, require_role

HISTORY_ZIP_LIMIT = 2000


def _workspace(request, project, target, *, base_url: str, title: str):
    """GET shows the three modes; POST answers (sample / single) or starts a batch evaluation."""
    is_run = target.target_type == "training_run"
    can_edit = has_role(request.user, project, "editor")
    mode = request.POST.get("mode") if request.method == "POST" else request.GET.get("tab", "sample")
    ready_datasets = list(project.datasets.filter(status="succeeded").order_by("name", "version"))
    forms = {"sample": SampleForm(prefix="s"), "single": SingleForm(prefix="q"), "batch": BatchForm(prefix="b"),
             "dataset": DatasetEvalForm(prefix="d", datasets=ready_datasets)}
    status_code = 200
    ready = True
    try:
        services.check_target(target)
    except AppError as exc:
        ready = False
        if request.method == "GET":
            messages.warning(request, str(exc))
    if request.method == "POST" and mode in forms:
        if not can_edit:
            require_role(request.user, project, "editor")  # 403 with the role's message
        cls = type(forms[mode])
        extra = {"datasets": ready_datasets} if mode == "dataset" else {}
        form = forms[mode] = cls(request.POST, request.FILES, prefix=forms[mode].prefix, **extra)
        if form.is_valid():
            try:
                if mode == "dataset":
                    chosen = next(d for d in ready_datasets if d.pk == form.cleaned_data["dataset"])
                    evaluation = services.create_dataset_evaluation(request.user, project, target, chosen,
                                                                    name=form.cleaned_data["name"])
                    messages.success(request, f"Your evaluation on “{chosen}” is queued; this page follows it.")
                    return redirect("evaluation:evaluation", pk=evaluation.pk)
                if mode == "batch":
                    evaluation = services.create_evaluation(
                        request.user, project, target, images_file=form.cleaned_data["images"],
                        questions_file=form.cleaned_data["questions"], name=form.cleaned_data["name"])
                    messages.success(request, "Your evaluation is queued; this page follows it.")
                    return redirect("evaluation:evaluation", pk=evaluation.pk)
                params = services.clamp_params(target, form.params())
                if mode == "sample":
                    prediction = services.predict_sample(request.user, project, target, params=params,
                                                         sample_key=form.cleaned_data["sample"],
                                                         question=form.cleaned_data["text"])
                else:
                    prediction = services.predict_uploaded(request.user, project, target, params=params,
                                                           uploaded=form.cleaned_data["image"],
                                                           question=form.cleaned_data["question"])
                extra = f"&sample={form.cleaned_data['sample']}" if mode == "sample" else ""
                return redirect(f"{base_url}{'&' if '?' in base_url else '?'}tab={mode}&prediction={prediction.pk}{extra}")
            except AppError as exc:
                add_to_form(form, exc)
        status_code = 400
    shown = None
    if filters.id_param(request.GET.get("prediction")):
        shown = (Prediction.objects.for_user(request.user)
                 .filter(pk=filters.id_param(request.GET["prediction"]), user=request.user).first())
        if shown:
            shown.region_words = services.describe_regions(shown)
    history = Prediction.objects.filter(project=project, user=request.user).exclude(kind=Prediction.Kind.BATCH)
    evaluations = Evaluation.objects.filter(project=project)
    if is_run:
        history, evaluations = history.filter(training_run=target), evaluations.filter(training_run=target)
    else:
        history, evaluations = history.filter(model=target), evaluations.filter(model=target)
    samples, samples_source = services.sample_images(project, target) if ready else ([], "")
    context = {
        "project": project, "target": target, "is_run": is_run, "title": title, "base_url": base_url,
        "model": services.model_of(target), "generative": services.is_generative(target), "ready": ready,
        "can_edit": can_edit, "tab": ("batch" if mode == "dataset" else mode) if mode in forms else "sample",
        "ready_datasets": ready_datasets,
        "chosen_sample": request.POST.get("s-sample") or request.GET.get("sample", ""), "forms": forms, "shown": shown,
        "samples": samples, "samples_source": samples_source,
        "history": history.select_related("training_run", "model")[:8],
        "evaluations": evaluations.select_related("training_run", "model")[:10],
    }
    return render(request, "evaluation_app/workspace.html", context, status=status_code)


@login_required
def run_page(request, run_pk):
    from training_app.models import TrainingRun

    run = get_for_user(TrainingRun.objects.select_related("project", "model"), request.user, pk=run_pk)
    return _workspace(request, run.project, run, base_url=reverse("evaluation:run", args=[run.pk]),
                      title=f"Ask “{run}” ({run.model.name})")


@login_required
def model_page(request, model_pk):
    from training_app.models import PretrainedModel

    model = get_object_or_404(PretrainedModel.objects.filter(zero_shot=True), pk=model_pk)
    project_id = request.GET.get("project") or request.POST.get("project")
    if filters.id_param(project_id) is None:
        projects = Project.objects.for_user(request.user).order_by("name")
        return render(request, "evaluation_app/choose_project.html", {"model": model, "projects": projects})
    project = get_for_user(Project, request.user, pk=filters.id_param(project_id))
    base = f"{reverse('evaluation:model', args=[model.pk])}?project={project.pk}"
    return _workspace(request, project, model, base_url=base, title=f"Ask {model.name} (no fine-tuning)")


@login_required
def evaluation_page(request, pk):
    evaluation = get_for_user(Evaluation.objects.select_related("project", "training_run", "model"), request.user, pk=pk)
    qs = filter_predictions(evaluation.shown_predictions().order_by("row", "pk"), request.GET)
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    services.attach_region_text(page.object_list)
    metrics = evaluation.metrics or {}
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "evaluation_app/evaluation.html", {
        "evaluation": evaluation, "project": evaluation.project, "page": page, "metrics": metrics,
        "queue_text": queue_text(queue_position(evaluation)),
        "can_edit": has_role(request.user, evaluation.project, "editor"),
        "per_answer_type": sorted((metrics.get("per_answer_type") or {}).items()),
        "per_question_type": sorted((metrics.get("per_question_type") or {}).items(), key=lambda kv: kv[1]),
        "q": request.GET.get("q", ""), "wrong": request.GET.get("wrong") == "1", "query": query.urlencode(),
        "target_url": _target_url(evaluation),
    })


def _target_url(evaluation) -> str:
    if evaluation.training_run_id:
        return reverse("evaluation:run", args=[evaluation.training_run_id])
    return f"{reverse('evaluation:model', args=[evaluation.model_id])}?project={evaluation.project_id}"


def _correction_datasets(evaluation):
    """Datasets a correction from this evaluation may go into (ready datasets of the project), and the default:
    the run's training dataset, else the evaluated dataset."""
    datasets = list(evaluation.project.datasets.filter(status="succeeded").order_by("name", "version"))
    default = evaluation.training_run.dataset_id if evaluation.training_run_id else evaluation.dataset_id
    return datasets, default


@login_required
def review_page(request, pk):
    """The review queue, one prediction at a time, least sure first: Enter on an empty box accepts the model's
    answer, a typed answer + Enter records a correction; the next prediction follows."""
    from datasets_app.models import Dataset
    from datasets_app.versions import VersionError, pending_corrections, record_correction

    evaluation = get_for_user(Evaluation.objects.select_related("project", "training_run", "model", "dataset"),
                              request.user, pk=pk)
    datasets, default = _correction_datasets(evaluation)
    can_edit = has_role(request.user, evaluation.project, "editor")
    chosen = request.POST.get("dataset") or request.GET.get("dataset") or default
    chosen = int(chosen) if str(chosen or "").isdigit() and int(chosen) in {d.pk for d in datasets} else None
    form = ReviewForm(request.POST or None, datasets=datasets, initial={"dataset": chosen})
    status_code = 200
    if request.method == "POST":
        require_role(request.user, evaluation.project, "editor")
        if form.is_valid():
            prediction = evaluation.shown_predictions().filter(pk=form.cleaned_data["prediction"]).first()
            action = form.cleaned_data["action"] or ("correct" if form.cleaned_data["answer"].strip() else "accept")
            if prediction is None:
                form.add_error(None, "That prediction is not part of this evaluation.")
            elif action == "skip":
                return redirect(f"{reverse('evaluation:review', args=[pk])}?after={prediction.pk}"
                                + (f"&dataset={chosen}" if chosen else ""))
            else:
                target = Dataset.objects.filter(pk=form.cleaned_data["dataset"]).first() if form.cleaned_data[
                    "dataset"] else None
                try:
                    record_correction(request.user, prediction, form.cleaned_data["answer"], dataset=target,
                                      accepted=action == "accept")
                except VersionError as exc:
                    form.add_error(None, str(exc))
                else:
                    messages.success(request, f"Saved: “{prediction.question}” → "
                                              f"{prediction.answer if action == 'accept' else form.cleaned_data['answer']}")
                    return redirect(f"{reverse('evaluation:review', args=[pk])}"
                                    + (f"?dataset={form.cleaned_data['dataset']}" if form.cleaned_data["dataset"] else ""))
        status_code = 400
    queue = services.review_queue(evaluation, pending_only=True)
    after = request.GET.get("after")
    if str(after or "").isdigit():  # skipped ones go to the end of this pass
        queue = queue.exclude(pk=int(after))
    upcoming = list(queue[:11])
    current = upcoming[0] if upcoming else None
    target = next((d for d in datasets if d.pk == chosen), None)
    return render(request, "evaluation_app/review.html", {
        "evaluation": evaluation, "project": evaluation.project, "current": current, "upcoming": upcoming[1:],
        "form": form, "can_edit": can_edit, "datasets": datasets, "chosen": chosen, "target": target,
        "reviewed": evaluation.shown_predictions().filter(corrections__isnull=False).distinct().count(),
        "total": evaluation.shown_predictions().count(),
        "pending_in_target": pending_corrections(target).count() if target else 0,
        "target_url": _target_url(evaluation),
    }, status=status_code)


@login_required
def leaderboard_page(request, project_pk):
    """Every run and zero-shot model evaluated on one dataset, side by side; sortable, best first, with a chart."""
    from evaluation_app.leaderboard import COLUMNS, evaluated_datasets, leaderboard

    project = get_for_user(Project, request.user, pk=project_pk)
    choices = list(evaluated_datasets(project))
    raw = request.GET.get("dataset")
    dataset = next((d for d in choices if str(d.pk) == str(raw)), None) if raw else (choices[0] if choices else None)
    if raw and dataset is None:
        messages.error(request, "Choose one of the datasets below: that one has no finished evaluation here.")
    sort = request.GET.get("sort") if request.GET.get("sort") in COLUMNS else "vqa_accuracy"
    rows = leaderboard(project, dataset, sort) if dataset else []
    answer_types = sorted({t for r in rows for t in r["per_answer_type"]})
    question_types = sorted({t for r in rows for t in r["per_question_type"]})
    for r in rows:
        r["answer_type_cells"] = [r["per_answer_type"].get(t) for t in answer_types]
        r["question_type_cells"] = [r["per_question_type"].get(t) for t in question_types]
    return render(request, "evaluation_app/leaderboard.html", {
        "project": project, "datasets": choices, "dataset": dataset, "rows": rows, "sort": sort,
        "columns": COLUMNS, "answer_types": answer_types, "question_types": question_types,
        "chart": [{"label": r["target"]["name"], "value": r["vqa_accuracy"]} for r in rows
                  if r["vqa_accuracy"] is not None],
    }, status=400 if raw and dataset is None else 200)


@login_required
@require_POST
def evaluation_cancel(request, pk):
    from piggyback.jobs import cancel

    evaluation = get_for_user(Evaluation.objects.select_related("project"), request.user, "editor", pk=pk)
    if cancel(evaluation):
        messages.info(request, "The evaluation will stop after its current step.")
    return redirect("evaluation:evaluation", pk=evaluation.pk)


@login_required
@require_POST
def evaluation_retry(request, pk):
    evaluation = get_for_user(Evaluation.objects.select_related("project"), request.user, "editor", pk=pk)
    try:
        services.retry_evaluation(request.user, evaluation)
        messages.success(request, "The evaluation was queued again with the files you uploaded.")
    except AppError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("evaluation:evaluation", pk=evaluation.pk)


def _history_qs(request):
    qs = (Prediction.objects.for_user(request.user).filter(user=request.user).exclude(kind=Prediction.Kind.BATCH)
          .select_related("project", "training_run", "model").order_by("-created_at", "-pk"))
    project = request.GET.get("project")
    if filters.id_param(project):
        qs = qs.filter(project_id=filters.id_param(project))
    return filter_predictions(qs, request.GET)


@login_required
def history_page(request):
    page = Paginator(_history_qs(request), 30).get_page(request.GET.get("page"))
    services.attach_region_text(page.object_list)
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "evaluation_app/history.html", {
        "page": page, "q": request.GET.get("q", ""), "project_id": request.GET.get("project", ""),
        "projects": Project.objects.for_user(request.user).order_by("name"), "query": query.urlencode(),
    })


@login_required
@require_GET
def history_zip(request):
    predictions = list(_history_qs(request)[:HISTORY_ZIP_LIMIT])
    if not predictions:
        raise Http404("You have not asked any questions yet.")
    services.ensure_overlays(predictions)  # overlays are drawn on first view; the ZIP needs them all
    tmp = tempfile.TemporaryFile()
    exports.write_annotated_zip(tmp, predictions, with_originals=True, csv_name="history.csv")
    tmp.seek(0)
    audit.record(audit.A.HISTORY_DOWNLOADED, details={"questions": len(predictions)})
    return FileResponse(tmp, as_attachment=True, filename="piggyback-question-history.zip",
                        content_type="application/zip")


@login_required
@require_GET
def sample_image(request, key):
    try:
        path, _answers, _label = services.sample_source(request.user, key)
    except LookupError:
        raise Http404("No such sample image.")
    response = FileResponse(open(path, "rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
def zero_shot_list(request):
    """Zero-shot models (BLIP, BLIP-2, Florence-2, ViLT-VQA) and whether their weights are here."""
    from training_app.models import PretrainedModel

    project_id = request.GET.get("project", "")
    project = get_for_user(Project, request.user, pk=filters.id_param(project_id)) if filters.id_param(project_id) else None
    models = [(m, services.zero_shot_available(m)) for m in PretrainedModel.objects.filter(zero_shot=True, enabled=True)]
    return render(request, "evaluation_app/zero_shot.html", {"models": models, "project": project})
