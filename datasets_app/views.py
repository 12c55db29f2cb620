"""Dataset pages: upload (with the sample dataset), detail (progress, report, items, charts), files."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_POST

from audit import trail as audit
from datasets_app import services, versions
from datasets_app.forms import DatasetUploadForm
from datasets_app.models import Dataset, DatasetItem
from gpu_worker.errors import AppError
from piggyback.errors import add_to_form
from piggyback.files import serve_file
from piggyback.models import Project
from piggyback.tenancy import get_for_user, role_of

ITEMS_PER_PAGE = 24
REPORT_ROWS_SHOWN = 100
PENDING_SHOWN = 50
DATASETS = Dataset.objects.select_related("project")


def train_url(dataset: Dataset) -> str:
    try:
        return reverse("training:start", args=[dataset.pk])
    except NoReverseMatch:
        return f"/training/datasets/{dataset.pk}/start/"


@login_required
def upload(request, project_pk):
    project = get_for_user(Project, request.user, "editor", pk=project_pk)
    form = DatasetUploadForm(request.POST or None, request.FILES or None)
    upload_error = ""
    if request.method == "POST":
        if form.is_valid():
            d = form.cleaned_data
            try:
                files = {key: (services.claim_upload(request.user, d[f"{key}_upload"], key)
                               if d.get(f"{key}_upload") else (d.get(key) or None))
                         for key in ("images", "questions", "annotations")}
                dataset = services.create_dataset(request.user, project, d["name"], **files)
            except services.UploadError as exc:
                upload_error = str(exc)  # shown above the form; on the field too when the form has it
                if exc.field in form.fields:
                    add_to_form(form, exc)
            else:
                messages.success(request, f"“{dataset.name}” was uploaded. PiggyBack is checking your files now.")
                return redirect("datasets:detail", pk=dataset.pk)
        else:
            upload_error = "Choose the images ZIP and the questions file, then press Upload."
    return render(request, "datasets_app/upload.html", {
        "project": project, "form": form, "upload_error": upload_error,
        "resumable_min_bytes": settings.RESUMABLE_PAGE_MIN_BYTES,
        "resumable_chunk_bytes": settings.RESUMABLE_PAGE_CHUNK_BYTES,
        "sample_images": services.SAMPLE_IMAGES,
    }, status=400 if upload_error else 200)


@login_required
@require_POST
def load_sample(request, project_pk):
    project = get_for_user(Project, request.user, "editor", pk=project_pk)
    dataset = services.create_sample_dataset(request.user, project)
    messages.success(request, f"The easy-VQA sample ({services.SAMPLE_IMAGES} images) was added; it is being checked now.")
    return redirect("datasets:detail", pk=dataset.pk)


@login_required
def sample_file(request, filename):
    if filename not in services.SAMPLE_FILES:
        raise Http404("No such sample file.")
    path = services.sample_files()[services.SAMPLE_FILES[filename]]
    content_type = "application/zip" if filename.endswith(".zip") else "text/csv"
    return FileResponse(open(path, "rb"), as_attachment=True, filename=filename, content_type=content_type)


def _reasons(counts: dict, key: str) -> list[tuple[str, int]]:
    return sorted(((code.replace("_", " "), n) for code, n in (counts.get(key) or {}).items()),
                  key=lambda kv: -kv[1])


@login_required
def detail(request, pk):
    dataset = get_for_user(DATASETS, request.user, pk=pk)
    search = request.GET.get("q", "").strip()
    answer_type = request.GET.get("answer_type", "")
    items = services.search_items(dataset, search, answer_type)
    page = Paginator(items, ITEMS_PER_PAGE).get_page(request.GET.get("page"))
    counts = dataset.counts or {}
    dropped_total = dataset.dropped.count()
    role = role_of(request.user, dataset)
    return render(request, "datasets_app/detail.html", {
        "dataset": dataset,
        "project": dataset.project,
        "counts": counts,
        "row_reasons": _reasons(counts, "dropped_by_reason"),
        "image_reasons": _reasons(counts, "images_dropped_by_reason"),
        "dropped": dataset.dropped.order_by("row", "id")[:REPORT_ROWS_SHOWN],
        "dropped_total": dropped_total,
        "report_rows_shown": REPORT_ROWS_SHOWN,
        "page": page,
        "search": search,
        "answer_type": answer_type,
        "can_edit": role in ("editor", "owner"),
        "is_owner": role == "owner",
        "train_url": train_url(dataset),
        "api_url": f"/api/v1/datasets/{dataset.pk}/",
        "versions": list(versions.lineage(dataset)),
        "pending": versions.pending_corrections(dataset).select_related("created_by")[:PENDING_SHOWN],
        "pending_total": versions.pending_corrections(dataset).count(),
        "feature_extractors": _feature_extractors(dataset),
    })


def _feature_extractors(dataset) -> list[dict]:
    """The region-feature extractors (name, weights) runs on this dataset used, one row per extractor."""
    from training_app.models import TrainingRun

    seen: dict = {}
    for run in TrainingRun.objects.filter(dataset=dataset, metrics__has_key="feature_extractor").order_by("pk"):
        fx = run.metrics["feature_extractor"]
        seen.setdefault(fx.get("id") or fx.get("name"), dict(fx, run=run))
    return list(seen.values())


@login_required
@require_POST
def new_version(request, pk):
    """Create version N+1 from the pending corrections (an immutable new dataset; its merge runs as a job)."""
    dataset = get_for_user(DATASETS, request.user, "editor", pk=pk)
    try:
        version = versions.create_version(request.user, dataset)
    except versions.VersionError as exc:
        messages.error(request, str(exc))
        return redirect("datasets:detail", pk=dataset.pk)
    messages.success(request, f"Version {version.version} of “{dataset.name}” is being made from "
                              f"{version.applied_corrections.count()} corrections.")
    return redirect("datasets:detail", pk=version.pk)


@login_required
def report_csv(request, pk):
    dataset = get_for_user(DATASETS, request.user, pk=pk)
    audit.record(audit.A.DATASET_DOWNLOADED, project=dataset.project, target=dataset,
                 details={"file": "cleaning report CSV"})
    response = HttpResponse(services.report_csv(dataset), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="cleaning-report-{dataset.pk}.csv"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
def item_image(request, item_id):
    item = get_for_user(DatasetItem, request.user, pk=item_id)
    return serve_file(item.image)


@login_required
def item_thumbnail(request, item_id):
    item = get_for_user(DatasetItem.objects.select_related("dataset"), request.user, pk=item_id)
    return serve_file(services.item_thumbnail(item))


@login_required
@require_POST
def retry(request, pk):
    dataset = get_for_user(DATASETS, request.user, "editor", pk=pk)
    try:
        services.retry_cleaning(dataset)
        messages.info(request, "The cleaning was queued again.")
    except AppError as exc:
        messages.error(request, str(exc))
    return redirect("datasets:detail", pk=dataset.pk)


@login_required
@require_POST
def cancel(request, pk):
    dataset = get_for_user(DATASETS, request.user, "editor", pk=pk)
    if services.cancel_cleaning(dataset):
        messages.info(request, "The cleaning will stop at its next step.")
    return redirect("datasets:detail", pk=dataset.pk)


@login_required
@require_POST
def delete(request, pk):
    dataset = get_for_user(DATASETS, request.user, "owner", pk=pk)
    project_pk, name = dataset.project_id, dataset.name
    try:
        services.delete_dataset(dataset)
    except services.DatasetInUse as exc:
        messages.error(request, str(exc))
        return redirect("datasets:detail", pk=pk)
    messages.success(request, f"Dataset “{name}” was deleted.")
    return redirect("projects:detail", pk=project_pk)
