"""Evaluation rules: who may ask, how one question is answered (cached model, stored image, overlays),
the sample images, and starting a batch evaluation (the only place that enqueues)."""
from __future__ import annotations

import functools
import json
import os
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import transaction
from PIL import Image, UnidentifiedImageError

from evaluation_app import model_cache
from evaluation_app.models import Evaluation, Prediction, margin_of
from gpu_worker.errors import Conflict, InvalidInput
from gpu_worker.images import upright
from gpu_worker.models.registry import GEN_LIMITS, TOP_K_LIMITS, resolve_generation  # noqa: F401 (re-exported)
from piggyback.files import cache_path, local_copy, save_local, storage_path
from piggyback.filters import id_param
from piggyback.jobs import enqueue
from piggyback.targets import target_of
from piggyback.tenancy import require_role

MAX_QUESTION_CHARS = 500
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_SIDE = 1920
ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP", "GIF", "BMP"}
SAMPLE_IMAGES = 8


# ------------------------------------------------------------------------------------------ rules
def model_of(target):
    """The PretrainedModel behind an answer target (piggyback.targets)."""
    return target.pretrained


def is_generative(target) -> bool:
    return model_of(target).task == "generate"


def check_target(target) -> None:
    """A training run must have succeeded; a pretrained model must be an enabled zero-shot model with weights."""
    target.check_can_answer()


def zero_shot_available(model) -> bool:
    return model.weights_present


def clamp_params(target, raw: dict) -> dict:
    """top_k for every model; num_beams / max_new_tokens only for generative ones (the registry's
    limits and defaults, the same the worker and the training page use)."""
    try:
        return resolve_generation(raw, model_of(target).task)
    except ValueError as exc:
        name, message = exc.args
        raise InvalidInput(message, name) from None


# ------------------------------------------------------------------------------------------ images
def store_image(project, uploaded, original_name: str = "") -> tuple[str, str, str]:
    """Check an uploaded image with Pillow and store it as PNG under a server-made name, with its thumbnail.

    Returns (storage name, original name, thumbnail storage name or ""). Raises InvalidInput with a readable
    message."""
    name = original_name or getattr(uploaded, "name", "") or "image"
    size = getattr(uploaded, "size", None)
    if size is not None and size > MAX_IMAGE_BYTES:
        raise InvalidInput(f"“{name}” is {size / 1e6:.1f} MB; images up to {MAX_IMAGE_BYTES // 2**20} MB are accepted.")
    try:
        uploaded.seek(0)
        with Image.open(uploaded) as probe:
            fmt = probe.format
            probe.verify()
        uploaded.seek(0)
        with Image.open(uploaded) as img:
            img.load()
            image = upright(img).convert("RGB")   # EXIF orientation applied once, at upload
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidInput(f"“{name}” is not an image Pillow can read. Upload a PNG or JPEG file.")
    if fmt not in ALLOWED_FORMATS:
        raise InvalidInput(f"“{name}” is a {fmt} file; upload PNG, JPEG, WebP, GIF or BMP.")
    if max(image.size) > MAX_IMAGE_SIDE:
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    stored, thumbnail = _save_png(project, image)
    return stored, name[:300], thumbnail


def thumbnail_name_for(image_name: str) -> str:
    """Where the thumbnail of a stored image lives: ``…/images/x.png`` -> ``…/thumbs/x.webp`` (the name the
    dataset cleaning gives its thumbnails too), else a ``thumbs/`` folder beside the image."""
    path = PurePosixPath(image_name)
    folder = path.parent.parent if path.parent.name == "images" else path.parent
    return str(folder / "thumbs" / f"{path.stem}.webp")


def store_thumbnail(image: Image.Image, name: str) -> bool:
    """Make the WebP thumbnail (``gpu_worker.safezip.make_thumbnail``, at most 256 px) of a loaded, upright
    image and store it under exactly ``name``; False when it could not be made. Shrinks ``image`` in place."""
    from gpu_worker.safezip import make_thumbnail

    target = storage_path(name)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            if not make_thumbnail(image, part):
                return False
            os.replace(part, target)   # atomic: a concurrent reader sees no file or the whole file
            return True
        finally:
            part.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "thumb.webp"
        if not make_thumbnail(image, local):
            return False
        save_local(local, name)
        return True


def prediction_thumbnail(prediction) -> str:
    """Storage name of a prediction's thumbnail; made here once (and recorded on every prediction of the same
    image) for predictions stored before thumbnails existed. The image itself when no thumbnail can be made
    ("" without an image)."""
    from django.core.files.storage import default_storage

    if prediction.thumbnail or not prediction.image:
        return prediction.thumbnail
    name = thumbnail_name_for(prediction.image)
    with _render_lock(name):
        if not default_storage.exists(name):
            try:
                with Image.open(local_copy(prediction.image)) as im:
                    im.load()
                    made = store_thumbnail(im, name)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                made = False
            if not made:
                return prediction.image   # serve_file answers 404 when the image itself is gone
    Prediction.objects.filter(project_id=prediction.project_id, image=prediction.image, thumbnail="").update(
        thumbnail=name)
    prediction.thumbnail = name
    return name


def _save_png(project, image: Image.Image) -> tuple[str, str]:
    """Store an upright image as PNG and make its thumbnail, once, as it enters; (image name, thumbnail name or
    "" when none could be made - prediction_thumbnail() tries again on first view). ``image`` ends shrunk."""
    name = _save_png_only(project, image)
    thumbnail = thumbnail_name_for(name)
    return name, (thumbnail if store_thumbnail(image, thumbnail) else "")


def _save_png_only(project, image: Image.Image) -> str:
    """Encode once (fast PNG compression: the answer waits for it) straight into a local storage; other
    storages get a temporary file copied in."""

    name = f"projects/{project.pk}/predictions/images/{uuid.uuid4().hex}.png"
    target = storage_path(name)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, format="PNG", compress_level=1)
        return name
    # remote storage: encode into this process's cache (where local_copy() looks), then upload from there,
    # so the model reads the image from disk instead of downloading what was just sent
    cached = cache_path(name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    part = cached.with_name(f".{cached.name}.{uuid.uuid4().hex}.part")
    try:
        image.save(part, format="PNG", compress_level=1)
        save_local(part, name)
        os.replace(part, cached)
    finally:
        part.unlink(missing_ok=True)
    return name


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
    """Storage name of a prediction's ``image`` / ``thumbnail`` / ``overlay`` / ``heatmap`` ("" when it has none).

    Overlays of single and sample predictions are drawn lazily: the answer stores only the regions and
    the names, and the first request for a file draws it from the stored image + regions and stores it;
    later requests serve the stored file and never draw again."""
    from django.core.files.storage import default_storage

    if which == "thumbnail":
        return prediction_thumbnail(prediction)
    name = {"image": prediction.image, "overlay": prediction.overlay, "heatmap": prediction.heatmap}.get(which) or ""
    if which == "image" or not name or not prediction.regions or default_storage.exists(name):
        return name
    if not prediction.image or not default_storage.exists(prediction.image):
        return name  # the image is gone: serve_file answers 404
    with _render_lock(name):
        if not default_storage.exists(name):  # another thread may have drawn it meanwhile
            store_overlay(str(local_copy(prediction.image)), prediction.regions, name, heatmap=(which == "heatmap"))
    return name


def describe_regions(prediction) -> list[str]:
    """The regions of a prediction's overlay / heat-map in words ("1. centre left, 38 %"), for screen readers.

    Reads only the stored image's header for its size (a cached local copy for remote storages); an image
    that cannot be read gives no description rather than an error.
    """
    from gpu_worker.explain import describe_regions as words

    if not prediction.regions or not prediction.image:
        return []
    try:
        with Image.open(local_copy(prediction.image)) as im:
            width, height = im.size
    except (OSError, UnidentifiedImageError, ValueError):
        return []
    return words(prediction.regions, width, height)


def attach_region_text(predictions) -> None:
    """Set ``region_text`` ("1. centre left, 38 %; 2. …") on every prediction of a shown page."""
    for p in predictions:
        p.region_text = "; ".join(describe_regions(p))


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
                image_original_name: str = "", expected_answers=None, thumbnail: str = "") -> Prediction:
    """Answer one question about a stored image with a (cached) model and keep it in the user's history.
    Needs the editor role in ``project`` (one query per request: roles are cached on the user)."""
    from gpu_worker.metrics import vqa_score
    from gpu_worker.predict import predict_batch
    from gpu_worker.vqa_normalize import answer_type, question_type

    require_role(user, project, "editor")
    check_target(target)
    question = " ".join((question or "").split())
    if not question:
        raise InvalidInput("Type a question about the image.")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidInput(f"Questions are limited to {MAX_QUESTION_CHARS} characters.")
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
    return Prediction.objects.create(
        project=project, kind=kind, user=user, **target.target_fields(),
        image=image_name, thumbnail=thumbnail, image_original_name=image_original_name, question=question,
        answer=str(result["answer"])[:300], confidence=float(result.get("confidence") or 0.0),
        margin=margin_of(result.get("top_k"), result.get("confidence")), top_k=result.get("top_k") or [], regions=regions[:5], overlay=overlay, heatmap=heatmap,
        expected_answers=expected, answer_type=item["answer_type"], question_type=item["question_type"],
        vqa_score=vqa_score(result["answer"], expected) if expected else None,
        params=params, latency_ms=round(latency_ms, 2),
    )


def predict_uploaded(user, project, target, *, uploaded, question: str, params: dict) -> Prediction:
    require_role(user, project, "editor")
    check_target(target)
    name, original, thumbnail = store_image(project, uploaded)
    return predict_one(user, project, target, image_name=name, question=question, kind=Prediction.Kind.SINGLE,
                       params=params, image_original_name=original, thumbnail=thumbnail)


# ------------------------------------------------------------------------------------------ samples
def sample_images(project, target=None) -> tuple[list[dict], str]:
    """Images the target has NOT trained on, with their questions, and a sentence saying where they come from.

    For a fine-tuned run: another ready dataset of the project (a holdout set), minus any image file the run's
    own dataset holds (dataset versions share image files); else the run's validation split (the images
    :func:`gpu_worker.train.training_split` kept out of training); else the easy-VQA test split. For a zero-shot
    model every project dataset is unseen. Each sample: {key, label, questions: [{text, expected}]}."""
    from datasets_app.models import Dataset, DatasetItem
    run = target if target.trained_on_dataset_id is not None else None
    items = DatasetItem.objects.filter(dataset__project=project, dataset__status="succeeded")
    if run is None:
        samples = _samples_from(items)
        if samples:
            return samples, "From this project's datasets (a zero-shot model has not trained on any of them)."
    else:
        seen = DatasetItem.objects.filter(dataset_id=run.dataset_id).values("image")
        holdout = items.exclude(dataset_id=run.dataset_id).exclude(image__in=seen)
        samples = _samples_from(holdout)
        if samples:
            names = Dataset.objects.filter(pk__in={s["dataset_id"] for s in samples}).values_list("name", flat=True)
            return samples, ("From the holdout set " + ", ".join(f"“{n}”" for n in sorted(names))
                             + ": images this model never trained on.")
        val_ids = _validation_item_ids(run.pk, run.dataset_id, json.dumps(run.params, sort_keys=True))
        samples = _samples_from(DatasetItem.objects.filter(pk__in=val_ids)) if val_ids else []
        if samples:
            return samples, ("From this run's validation split: images of “" + run.dataset.name
                             + "” that were kept out of training.")
    return _easyvqa_samples(), "From the easy-VQA test split (shapes and colours), which no project dataset holds."


def _samples_from(items) -> list[dict]:
    samples: dict[str, dict] = {}
    for it in items.order_by("dataset_id", "row")[:400]:
        entry = samples.setdefault(it.image, {"key": f"d{it.pk}", "dataset_id": it.dataset_id,
                                              "label": it.image_original_name or f"Image {len(samples) + 1}",
                                              "questions": []})
        if len(entry["questions"]) < 12:
            entry["questions"].append({"text": it.question, "expected": it.top_answer})
        if len(samples) > SAMPLE_IMAGES:
            break
    return list(samples.values())[:SAMPLE_IMAGES]


@functools.lru_cache(maxsize=32)
def _validation_item_ids(run_pk: int, dataset_id: int, params_json: str) -> frozenset:
    """DatasetItem ids of a run's validation questions (cached per run: a dataset is immutable once clean)."""
    from datasets_app.models import Dataset
    from datasets_app.services import training_items
    from gpu_worker.train import training_split

    params = json.loads(params_json)
    if not params.get("val_fraction") or "seed" not in params:
        return frozenset()
    items, _root = training_items(Dataset.objects.get(pk=dataset_id))
    _train, val = training_split(items, params)
    return frozenset(it["id"] for it in val)


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

    if key.startswith("d") and id_param(key[1:]):
        item = DatasetItem.objects.for_user(user).filter(pk=id_param(key[1:])).first()
        if item is None:
            raise LookupError(key)
        answers = {q.question: q.answers for q in DatasetItem.objects.filter(dataset_id=item.dataset_id, image=item.image)}
        return local_copy(item.image), answers, item.image_original_name or Path(item.image).name
    if key.startswith("e") and key[1:].isascii() and key[1:].isdigit() and len(key) < 12:
        path = Path(image_root("test")) / f"{int(key[1:])}.png"
        if not path.is_file():
            raise LookupError(key)
        answers = {it["question"]: it["answers"] for it in _easyvqa_items() if it["image"] == path.name}
        return path, answers, f"easy-VQA {path.name}"
    raise LookupError(key)


def predict_sample(user, project, target, *, sample_key: str, question: str, params: dict) -> Prediction:
    require_role(user, project, "editor")
    check_target(target)
    try:
        path, answers, label = sample_source(user, sample_key)
    except LookupError:
        raise InvalidInput("Pick one of the sample images.")
    with Image.open(path) as img:
        name, thumbnail = _save_png(project, img.convert("RGB"))
    question = " ".join((question or "").split())
    return predict_one(user, project, target, image_name=name, question=question, kind=Prediction.Kind.SAMPLE,
                       params=params, image_original_name=label, expected_answers=answers.get(question, []),
                       thumbnail=thumbnail)


# ------------------------------------------------------------------------------------------ batch
def create_evaluation(user, project, target, *, images_file, questions_file, params: dict | None = None,
                      name: str = "") -> Evaluation:
    """Store the upload under server-made names and queue ``batch_eval_job`` on the gpu queue."""
    from evaluation_app.jobs import batch_eval_job

    require_role(user, project, "editor")
    check_target(target)
    for f, what in ((images_file, "images ZIP"), (questions_file, "questions file")):
        if f is None:
            raise InvalidInput(f"Choose the {what}.")
        if f.size > settings.UPLOAD_MAX_BYTES:
            raise InvalidInput(f"The {what} is larger than {settings.UPLOAD_MAX_BYTES / 2**30:.1f} GB.")
    with transaction.atomic():
        evaluation = Evaluation(
            project=project, created_by=user, **target.target_fields(), name=(name or "")[:120],
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

    require_role(user, project, "editor")
    check_target(target)
    if dataset.project_id != project.pk:
        raise InvalidInput(f"Dataset {dataset.pk} is not a dataset of the project “{project.name}”.")
    if dataset.status != "succeeded":
        raise Conflict(f"The dataset “{dataset}” is not ready (its cleaning is {dataset.status}); "
                       "evaluate on a ready dataset.", "dataset")
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            project=project, created_by=user, **target.target_fields(), dataset=dataset, images_file="", questions_file="",
            params={**clamp_params(target, params or {}), "dataset_name": str(dataset)[:200]},
            name=(name or f"{target} on {dataset}")[:120])
        enqueue(evaluation, batch_eval_job)
    return evaluation


def retry_evaluation(user, evaluation: Evaluation) -> str:
    """Queue a failed or cancelled evaluation again with the files it already stored.

    The job deletes any predictions an earlier attempt left (a killed worker) before it stores its own, so
    nothing is doubled.
    """
    from evaluation_app.jobs import batch_eval_job

    require_role(user, evaluation, "editor")
    evaluation.refresh_from_db()
    if evaluation.status not in ("failed", "cancelled"):
        raise Conflict(f"Only a failed or cancelled evaluation can be retried; this one is {evaluation.status}.")
    check_target(target_of(evaluation))
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

    qs = evaluation.shown_predictions()
    if pending_only:
        qs = qs.filter(corrections__isnull=True)
    return qs.order_by("confidence", F("margin").asc(nulls_last=True), "row", "pk").prefetch_related(
        Prefetch("corrections", queryset=Correction.objects.order_by("-created_at", "-pk"), to_attr="_corrections"))
