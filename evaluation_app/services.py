"""Evaluation rules: who may ask, how one question is answered (cached model, stored image, overlays),
the sample images, and starting a batch evaluation (the only place that enqueues)."""
from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from PIL import Image, UnidentifiedImageError

from evaluation_app import model_cache
from evaluation_app.models import Evaluation, Prediction, margin_of
from gpu_worker import UserFacingError
from piggyback.files import local_copy, save_local, storage_path
from piggyback.jobs import enqueue
from piggyback.tenancy import has_role, role_of

MAX_QUESTION_CHARS = 500
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_SIDE = 1920
ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP"}
GEN_LIMITS = {"num_beams": (1, 8, 3), "max_new_tokens": (1, 64, 10)}
TOP_K_LIMITS = (1, 20, 5)
SAMPLE_IMAGES = 8


# ------------------------------------------------------------------------------------------ rules
def require_editor(user, project) -> None:
    if not has_role(user, project, "editor"):
        current = role_of(user, project) or "no"
        raise PermissionDenied(f"You are a {current} member of “{project.name}”; asking the model needs the "
                               "editor role. Ask the project owner.")


def model_of(target):
    """The PretrainedModel behind a TrainingRun or a PretrainedModel."""
    from training_app.models import TrainingRun

    return target.model if isinstance(target, TrainingRun) else target


def is_generative(target) -> bool:
    return model_of(target).task == "generate"


def check_target(target) -> None:
    """A training run must have succeeded; a pretrained model must be an enabled zero-shot model with weights."""
    from training_app.models import TrainingRun

    if isinstance(target, TrainingRun):
        if target.status != "succeeded":
            raise UserFacingError(f"“{target}” has not finished training yet; you can ask it questions once it "
                                  "has succeeded.")
        return
    if not (target.zero_shot and target.enabled):
        raise UserFacingError(f"{target.name} cannot answer questions without fine-tuning; train it first.")
    if not zero_shot_available(target):
        raise UserFacingError(f"The weights of {target.name} are not on this server "
                              f"({target.availability_reason or 'not downloaded'}).")


def zero_shot_available(model) -> bool:
    source = model.source or ""
    return bool(source) and (Path(source).is_dir() or model.available)


def clamp_params(target, raw: dict) -> dict:
    """top_k for every model; num_beams / max_new_tokens only for generative ones (clamped to limits)."""
    def _int(name, limits):
        lo, hi, default = limits
        value = raw.get(name)
        if value in (None, ""):
            return default
        try:
            return max(lo, min(hi, int(value)))
        except (TypeError, ValueError):
            raise ValidationError({name: f"{name.replace('_', ' ')} must be a whole number."})

    params = {"top_k": _int("top_k", TOP_K_LIMITS)}
    if is_generative(target):
        for name, limits in GEN_LIMITS.items():
            params[name] = _int(name, limits)
    return params


# ------------------------------------------------------------------------------------------ images
def store_image(project, uploaded, original_name: str = "") -> tuple[str, str]:
    """Check an uploaded image with Pillow and store it as PNG under a server-made name.

    Returns (storage name, original name). Raises ValidationError with a readable message."""
    name = original_name or getattr(uploaded, "name", "") or "image"
    size = getattr(uploaded, "size", None)
    if size is not None and size > MAX_IMAGE_BYTES:
        raise ValidationError(f"“{name}” is {size / 1e6:.1f} MB; images up to {MAX_IMAGE_BYTES // 2**20} MB are accepted.")
    try:
        uploaded.seek(0)
        with Image.open(uploaded) as probe:
            fmt = probe.format
            probe.verify()
        uploaded.seek(0)
        with Image.open(uploaded) as img:
            img.load()
            image = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ValidationError(f"“{name}” is not an image Pillow can read. Upload a PNG or JPEG file.")
    if fmt not in ALLOWED_FORMATS:
        raise ValidationError(f"“{name}” is a {fmt} file; upload PNG, JPEG, WebP, GIF or BMP.")
    if max(image.size) > MAX_IMAGE_SIDE:
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    return _save_png(project, image), name[:300]


def _save_png(project, image: Image.Image) -> str:
    """Encode once (fast PNG compression: the answer waits for it) straight into a local storage; other
    storages get a temporary file copied in."""

    name = f"projects/{project.pk}/predictions/images/{uuid.uuid4().hex}.png"
    target = storage_path(name)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, format="PNG", compress_level=1)
        return name
    with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as tmp:
        image.save(tmp, format="PNG", compress_level=1)
    try:
        return save_local(tmp.name, name)
    finally:
        Path(tmp.name).unlink(missing_ok=True)


def store_overlay(image, regions, name: str, *, heatmap: bool = False) -> str:
    """Draw one overlay (``image``: path or PIL image) and store it under ``name``.

    With a local storage the PNG is drawn into a temporary file beside its final place and renamed into
    place (atomic: a concurrent reader sees no file or the whole file); other storages get a copy."""
    from gpu_worker.explain import draw_overlay

    target = storage_path(name)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            draw_overlay(image, regions, str(part), heatmap=heatmap)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        return name
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "overlay.png"
        draw_overlay(image, regions, str(local), heatmap=heatmap)
        return save_local(local, name)


def overlay_names(project, kind: str) -> tuple[str, str]:
    """Storage names the boxes overlay and the heat-map of a new single / sample prediction will have."""
    stem = f"projects/{project.pk}/overlays/{kind}/{uuid.uuid4().hex}"
    return f"{stem}-boxes.png", f"{stem}-heatmap.png"


def can_see_files(user, prediction) -> bool:
    """Single and sample predictions are their asker's personal history; batch ones belong to the project
    (the caller has already limited ``prediction`` to the user's projects)."""
    return prediction.kind == Prediction.Kind.BATCH or (user.is_authenticated and prediction.user_id == user.pk)


def prediction_file(prediction, which: str) -> str:
    """Storage name of a prediction's ``image`` / ``overlay`` / ``heatmap`` ("" when it has none).

    Overlays of single and sample predictions are drawn lazily: the answer stores only the regions and
    the names, and the first request for a file draws it from the stored image + regions and stores it;
    later requests serve the stored file and never draw again."""
    from django.core.files.storage import default_storage

    name = {"image": prediction.image, "overlay": prediction.overlay, "heatmap": prediction.heatmap}.get(which) or ""
    if which == "image" or not name or not prediction.regions or default_storage.exists(name):
        return name
    if not prediction.image or not default_storage.exists(prediction.image):
        return name  # the image is gone: serve_file answers 404
    with _render_lock(name):
        if not default_storage.exists(name):  # another thread may have drawn it meanwhile
            store_overlay(str(local_copy(prediction.image)), prediction.regions, name, heatmap=(which == "heatmap"))
    return name


def ensure_overlays(predictions) -> None:
    """Draw every not-yet-drawn boxes overlay (downloads such as the history ZIP need them all)."""
    for p in predictions:
        prediction_file(p, "overlay")


_RENDER_LOCKS: dict[str, threading.Lock] = {}
_RENDER_LOCKS_GUARD = threading.Lock()


@contextmanager
def _render_lock(name: str):
    """One drawing per file at a time in this process (threads asking for the same new overlay draw it once)."""
    with _RENDER_LOCKS_GUARD:
        lock = _RENDER_LOCKS.setdefault(name, threading.Lock())
    try:
        with lock:
            yield
    finally:
        with _RENDER_LOCKS_GUARD:
            if _RENDER_LOCKS.get(name) is lock and not lock.locked():
                del _RENDER_LOCKS[name]


# ------------------------------------------------------------------------------------------ one question
def predict_one(user, project, target, *, image_name: str, question: str, kind: str, params: dict,
                image_original_name: str = "", expected_answers=None, checked: bool = False) -> Prediction:
    """Answer one question about a stored image with a (cached) model and keep it in the user's history.

    ``checked=True``: the caller has just run ``require_editor`` and ``check_target`` (saves a role query)."""
    from gpu_worker.metrics import vqa_score
    from gpu_worker.predict import predict_batch
    from gpu_worker.vqa_normalize import answer_type, question_type
    from training_app.models import TrainingRun

    if not checked:
        require_editor(user, project)
        check_target(target)
    question = " ".join((question or "").split())
    if not question:
        raise ValidationError("Type a question about the image.")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValidationError(f"Questions are limited to {MAX_QUESTION_CHARS} characters.")
    expected = list(expected_answers or [])
    local = local_copy(image_name)
    item = {"id": 0, "image": local.name, "question": question, "answers": expected,
            "answer_type": answer_type(expected) if expected else "", "question_type": question_type(question)}
    gen = {k: v for k, v in params.items() if k in GEN_LIMITS}
    can_explain = model_of(target).can_explain
    folder = model_cache.model_folder_for(target)
    started = time.perf_counter()
    with model_cache.use_model(folder, model_cache.registry_key_for(target)) as adapter:
        result = predict_batch(adapter, [item], str(local.parent), top_k=params.get("top_k", 5), batch_size=1,
                               explain=can_explain, **gen)[0]
    latency_ms = (time.perf_counter() - started) * 1000
    regions = result.get("regions") or []
    # overlays are drawn on their first request (prediction_file), not here: the answer only runs the model
    overlay, heatmap = overlay_names(project, kind) if regions else ("", "")
    is_run = isinstance(target, TrainingRun)
    return Prediction.objects.create(
        project=project, kind=kind, user=user,
        training_run=target if is_run else None, model=None if is_run else target,
        image=image_name, image_original_name=image_original_name, question=question,
        answer=str(result["answer"])[:300], confidence=float(result.get("confidence") or 0.0),
        margin=margin_of(result.get("top_k"), result.get("confidence")), top_k=result.get("top_k") or [], regions=regions[:5], overlay=overlay, heatmap=heatmap,
        expected_answers=expected, answer_type=item["answer_type"], question_type=item["question_type"],
        vqa_score=vqa_score(result["answer"], expected) if expected else None,
        params=params, latency_ms=round(latency_ms, 2),
    )


def predict_uploaded(user, project, target, *, uploaded, question: str, params: dict,
                     role_checked: bool = False) -> Prediction:
    """``role_checked=True``: the caller (the API view) has already required the editor role."""
    if not role_checked:
        require_editor(user, project)
    check_target(target)
    name, original = store_image(project, uploaded)
    return predict_one(user, project, target, image_name=name, question=question, kind=Prediction.Kind.SINGLE,
                       params=params, image_original_name=original, checked=True)


# ------------------------------------------------------------------------------------------ samples
def sample_images(project, target=None) -> list[dict]:
    """Demo images with their questions: from the run's (or the project's) data set when it has items,
    else from the easy-VQA test split. Each: {key, label, questions: [{text, expected}]}."""
    from datasets_app.models import DatasetItem

    dataset_id = getattr(target, "dataset_id", None)
    items = DatasetItem.objects.filter(dataset__project=project, dataset__status="succeeded")
    if dataset_id:
        items = items.filter(dataset_id=dataset_id)
    samples: dict[str, dict] = {}
    for it in items.order_by("dataset_id", "row")[:400]:
        entry = samples.setdefault(it.image, {"key": f"d{it.pk}", "label": it.image_original_name or f"Image {len(samples) + 1}",
                                              "questions": []})
        if len(entry["questions"]) < 12:
            entry["questions"].append({"text": it.question, "expected": it.top_answer})
        if len(samples) > SAMPLE_IMAGES:
            break
    out = list(samples.values())[:SAMPLE_IMAGES]
    return out or _easyvqa_samples()


@functools.lru_cache(maxsize=1)
def _easyvqa_items() -> tuple:
    from gpu_worker.easyvqa import load_items

    return tuple(load_items("test", max_images=SAMPLE_IMAGES, seed=7)[0])


def _easyvqa_samples() -> list[dict]:
    items = _easyvqa_items()
    samples: dict[str, dict] = {}
    for it in items:
        image_id = Path(it["image"]).stem
        entry = samples.setdefault(image_id, {"key": f"e{image_id}", "label": f"easy-VQA test image {image_id}",
                                              "questions": []})
        entry["questions"].append({"text": it["question"], "expected": it["answers"][0] if it["answers"] else ""})
    return list(samples.values())


def sample_source(user, key: str) -> tuple[Path, list, str]:
    """(local image path, expected answers for questions by text, label) of a sample key; 404-style
    LookupError for keys outside the user's projects or unknown ids."""
    from datasets_app.models import DatasetItem
    from gpu_worker.easyvqa import image_root

    if key.startswith("d") and key[1:].isdigit():
        item = DatasetItem.objects.for_user(user).filter(pk=int(key[1:])).first()
        if item is None:
            raise LookupError(key)
        answers = {q.question: q.answers for q in DatasetItem.objects.filter(dataset_id=item.dataset_id, image=item.image)}
        return local_copy(item.image), answers, item.image_original_name or Path(item.image).name
    if key.startswith("e") and key[1:].isdigit():
        path = Path(image_root("test")) / f"{int(key[1:])}.png"
        if not path.is_file():
            raise LookupError(key)
        answers = {it["question"]: it["answers"] for it in _easyvqa_items() if it["image"] == path.name}
        return path, answers, f"easy-VQA {path.name}"
    raise LookupError(key)


def predict_sample(user, project, target, *, sample_key: str, question: str, params: dict) -> Prediction:
    require_editor(user, project)
    check_target(target)
    try:
        path, answers, label = sample_source(user, sample_key)
    except LookupError:
        raise ValidationError("Pick one of the sample images.")
    with Image.open(path) as img:
        name = _save_png(project, img.convert("RGB"))
    question = " ".join((question or "").split())
    return predict_one(user, project, target, image_name=name, question=question, kind=Prediction.Kind.SAMPLE,
                       params=params, image_original_name=label, expected_answers=answers.get(question, []),
                       checked=True)


# ------------------------------------------------------------------------------------------ batch
def create_evaluation(user, project, target, *, images_file, questions_file, params: dict | None = None,
                      name: str = "") -> Evaluation:
    """Store the upload under server-made names and queue ``batch_eval_job`` on the gpu queue."""
    from evaluation_app.jobs import batch_eval_job
    from training_app.models import TrainingRun

    require_editor(user, project)
    check_target(target)
    for f, what in ((images_file, "images ZIP"), (questions_file, "questions file")):
        if f is None:
            raise ValidationError(f"Choose the {what}.")
        if f.size > settings.UPLOAD_MAX_BYTES:
            raise ValidationError(f"The {what} is larger than {settings.UPLOAD_MAX_BYTES / 2**30:.1f} GB.")
    is_run = isinstance(target, TrainingRun)
    with transaction.atomic():
        evaluation = Evaluation(
            project=project, created_by=user, training_run=target if is_run else None,
            model=None if is_run else target, name=(name or "")[:120],
            params={**clamp_params(target, params or {}),
                    "images_name": Path(getattr(images_file, "name", "images.zip")).name[:200],
                    "questions_name": Path(getattr(questions_file, "name", "questions.csv")).name[:200]},
        )
        evaluation.images_file.save("images.zip", images_file, save=False)
        evaluation.questions_file.save(_questions_name(questions_file), questions_file, save=False)
        evaluation.save()
        if not evaluation.name:
            evaluation._update(name=f"Evaluation {evaluation.pk} · {evaluation.params['questions_name']}"[:120])
        enqueue(evaluation, batch_eval_job)
    return evaluation


def create_dataset_evaluation(user, project, target, dataset, *, params: dict | None = None,
                              name: str = "") -> Evaluation:
    """Evaluate on a ready dataset of the project (its cleaned items and stored images; nothing is uploaded)."""
    from evaluation_app.jobs import batch_eval_job
    from training_app.models import TrainingRun

    require_editor(user, project)
    check_target(target)
    if dataset.project_id != project.pk:
        raise ValidationError(f"Dataset {dataset.pk} is not a dataset of the project “{project.name}”.")
    if dataset.status != "succeeded":
        raise ValidationError(f"The dataset “{dataset}” is not ready (its cleaning is {dataset.status}); "
                              "evaluate on a ready dataset.")
    is_run = isinstance(target, TrainingRun)
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            project=project, created_by=user, training_run=target if is_run else None,
            model=None if is_run else target, dataset=dataset, images_file="", questions_file="",
            params={**clamp_params(target, params or {}), "dataset_name": str(dataset)[:200]},
            name=(name or f"{target} on {dataset}")[:120])
        enqueue(evaluation, batch_eval_job)
    return evaluation


def retry_evaluation(user, evaluation: Evaluation) -> str:
    """Queue a failed or cancelled evaluation again with the files it already stored.

    The job replaces any predictions of an earlier attempt in one transaction, so nothing is doubled.
    """
    from evaluation_app.jobs import batch_eval_job

    require_editor(user, evaluation.project)
    evaluation.refresh_from_db()
    if evaluation.status not in ("failed", "cancelled"):
        raise ValidationError("Only a failed or cancelled evaluation can be retried.")
    check_target(evaluation.training_run or evaluation.model)
    return enqueue(evaluation, batch_eval_job)


def _questions_name(f) -> str:
    ext = Path(getattr(f, "name", "") or "").suffix.lower()
    return "questions" + (ext if ext in (".csv", ".tsv", ".txt", ".json", ".jsonl") else ".csv")


# ------------------------------------------------------------------------------------------ review
def review_queue(evaluation: Evaluation, *, pending_only: bool = False):
    """The evaluation's predictions, least sure first: lowest confidence, then the smallest gap between the
    two best answers, then row. Each carries ``latest_correction`` (the last one recorded, or None)."""
    from django.db.models import F, Prefetch

    from datasets_app.models import Correction

    qs = evaluation.predictions.all()
    if pending_only:
        qs = qs.filter(corrections__isnull=True)
    return qs.order_by("confidence", F("margin").asc(nulls_last=True), "row", "pk").prefetch_related(
        Prefetch("corrections", queryset=Correction.objects.order_by("-created_at", "-pk"), to_attr="_corrections"))
