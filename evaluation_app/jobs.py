"""RQ entry point of a batch evaluation: clean the upload, predict every question with the cached model,
draw each overlay once, store predictions + metrics, and pack the downloads."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from django.db import transaction
from PIL import Image

from evaluation_app import exports, model_cache
from evaluation_app.models import Prediction, margin_of
from gpu_worker import Cancelled, UserFacingError
from piggyback.files import local_copy, save_local, save_tree
from piggyback.jobs import background_job

# share of the progress bar per stage
_CLEAN, _PREDICT, _DRAW = 0.15, 0.65, 0.15


def _scaled(reporter, start, span):
    def report(progress, stage="", metrics=None):
        reporter(start + span * max(0.0, min(1.0, float(progress))), stage)
    return report


def _dataset_items(row):
    """(items, local image root, {relative image: storage name}, {storage name: thumbnail}) of the evaluated
    dataset (its thumbnails were made at cleaning; items from before then get theirs on first view)."""
    from datasets_app.models import DatasetItem
    from datasets_app.services import UploadError, training_items

    try:
        items, image_root = training_items(row.dataset)
    except UploadError as exc:
        raise UserFacingError(str(exc)) from exc
    if not items:
        raise UserFacingError(f"The dataset “{row.dataset}” has no questions to evaluate.")
    thumbs = dict(DatasetItem.objects.filter(dataset=row.dataset).exclude(thumbnail="")
                  .values_list("image", "thumbnail").distinct())
    return items, image_root, {it["image"]: it["stored"] for it in items}, thumbs


def _parameter_count(adapter):
    """Parameters of the loaded model (its size on the leaderboard); None when it is not a torch module."""
    model = getattr(adapter, "model", None)
    try:
        return int(sum(p.numel() for p in model.parameters()))
    except (AttributeError, TypeError):
        return None


def _calibration_of(predictions) -> tuple[float, list]:
    """ECE and reliability bins of the labelled predictions (confidence vs official VQA accuracy)."""
    from gpu_worker.calibration import expected_calibration_error, reliability_bins

    scored = [p for p in predictions if p.vqa_score is not None]
    conf = [min(1.0, max(0.0, p.confidence)) for p in scored]
    correct = [p.vqa_score for p in scored]
    return round(expected_calibration_error(conf, correct), 5), reliability_bins(conf, correct)


@background_job("evaluation_app.Evaluation")
def batch_eval_job(row, reporter):
    from evaluation_app.services import model_of, store_overlay
    from gpu_worker.cleaning import clean_dataset
    from gpu_worker.metrics import evaluate, vqa_score
    from gpu_worker.predict import predict_batch

    target = row.training_run or row.model
    if target is None:
        raise UserFacingError("This evaluation has no model any more (it was deleted).")
    prefix = f"projects/{row.project_id}/evaluations/{row.pk}"
    params = dict(row.params or {})
    with tempfile.TemporaryDirectory(prefix="pb-eval-") as tmp:
        if row.dataset_id is not None:
            # 1'. a ready dataset of the project: its cleaned items and stored images (shared, not copied)
            reporter(0.0, f"Reading the dataset “{row.dataset}”", force=True)
            items, image_root, stored, thumbs = _dataset_items(row)
            counts = {"rows_in": len(items), "rows_kept": len(items), "rows_dropped": 0, "level": "success",
                      "images_kept": len(stored),
                      "dataset": row.dataset_id, "dataset_version": row.dataset.version}
            row._update(counts=counts, warnings=[], output_dir=prefix)
        else:
            # 1. validate the upload exactly like a dataset upload (answers optional)
            reporter(0.0, "Checking your upload", force=True)
            result = clean_dataset(
                local_copy(row.questions_file.name), local_copy(row.images_file.name), tmp,
                report=_scaled(reporter, 0.0, _CLEAN), should_cancel=reporter.should_cancel,
                questions_name=params.get("questions_name"), images_name=params.get("images_name"),
                thumbnails=True,   # the lists show them, made once here like a dataset's
            )
            items, image_root = result.items, result.image_root
            counts = dict(result.counts, level=result.level, dropped=result.dropped[:200],
                          dropped_images=result.dropped_images[:200])
            row._update(counts=counts, warnings=list(result.warnings), output_dir=prefix)
            stored = {p.split("/images/", 1)[1]: p for p in save_tree(Path(image_root), f"{prefix}/images")}
            made = {p.split("/thumbs/", 1)[1]: p for p in save_tree(Path(result.thumb_root), f"{prefix}/thumbs")}
            thumbs = {stored[it["image"]]: made[it["thumbnail"]] for it in items
                      if it.get("thumbnail") in made and it["image"] in stored}

        # 2. predict (the model stays cached in this worker for the next evaluation)
        gen = {k: v for k, v in params.items() if k in ("num_beams", "max_new_tokens")}
        explain = model_of(target).can_explain
        reporter(_CLEAN, f"Answering {len(items):,} questions", force=True)
        with model_cache.use_model(model_cache.model_folder_for(target), model_cache.registry_key_for(target)) as adapter:
            started = time.perf_counter()
            preds = predict_batch(adapter, items, str(image_root), top_k=int(params.get("top_k", 5)),
                                  batch_size=int(params.get("batch_size", 256)), explain=explain,
                                  report=_scaled(reporter, _CLEAN, _PREDICT), should_cancel=reporter.should_cancel,
                                  **gen)
            predict_seconds = time.perf_counter() - started
            parameters = _parameter_count(adapter)

        # 3. overlays, drawn once (an image is decoded once for all its questions) and shown again from storage
        overlays = []
        opened: dict = {}
        for i, (item, pred) in enumerate(zip(items, preds)):
            if i % 200 == 0:
                if reporter.should_cancel():
                    raise Cancelled()
                reporter(_CLEAN + _PREDICT + _DRAW * i / max(1, len(items)), f"Drawing attention maps: {i:,} of {len(items):,}")
            if not pred.get("regions"):
                overlays.append("")
                continue
            if item["image"] not in opened:
                if len(opened) >= 256:  # bounded memory for huge evaluations
                    opened.clear()
                with Image.open(Path(image_root) / item["image"]) as im:
                    opened[item["image"]] = im.convert("RGB")
            overlays.append(store_overlay(opened[item["image"]], pred["regions"][:5],
                                          f"projects/{row.project_id}/overlays/eval-{row.pk}/{i + 1}-boxes.png"))
        opened.clear()

        # 4. predictions + official VQA metrics when answers were given
        reporter(_CLEAN + _PREDICT + _DRAW, "Saving the answers", force=True)
        is_run = row.training_run_id is not None
        objs = [
            Prediction(
                project_id=row.project_id, kind=Prediction.Kind.BATCH, evaluation=row, user_id=row.created_by_id,
                training_run_id=row.training_run_id if is_run else None, model_id=None if is_run else row.model_id,
                row=item.get("row"), image=stored.get(item["image"], ""),
                thumbnail=thumbs.get(stored.get(item["image"], ""), ""),
                image_original_name=str(item.get("image_original_name", ""))[:300], question=item["question"],
                answer=str(pred["answer"])[:300], confidence=float(pred.get("confidence") or 0.0),
                margin=margin_of(pred.get("top_k"), pred.get("confidence")), top_k=pred.get("top_k") or [], regions=(pred.get("regions") or [])[:5], overlay=overlay,
                expected_answers=item.get("answers") or [], answer_type=item.get("answer_type", ""),
                question_type=item.get("question_type", "")[:60],
                vqa_score=vqa_score(pred["answer"], item["answers"]) if item.get("answers") else None,
                params=gen,
            )
            for item, pred, overlay in zip(items, preds, overlays)
        ]
        labelled = sum(1 for it in items if it.get("answers"))
        metrics = {"count": len(items), "labelled": labelled, "predict_seconds": round(predict_seconds, 3),
                   "questions_per_second": round(len(items) / predict_seconds, 2) if predict_seconds > 0 else None,
                   "model_parameters": parameters}
        ece = None
        if labelled:
            metrics.update(evaluate([p["answer"] for p in preds], items))
            metrics["labelled"] = labelled
            ece, metrics["reliability"] = _calibration_of(objs)
        with transaction.atomic():
            Prediction.objects.filter(evaluation=row).delete()  # a retried job starts clean
            Prediction.objects.bulk_create(objs, batch_size=1000)
            row._update(metrics=metrics, ece=ece)

        # 5. downloads, packed once
        reporter(0.97, "Packing the downloads", force=True)
        ordered = list(Prediction.objects.filter(evaluation=row).select_related("training_run", "model").order_by("row", "pk"))
        csv_local = Path(tmp) / "predictions.csv"
        csv_local.write_bytes(exports.csv_bytes(ordered))
        save_local(csv_local, f"{prefix}/predictions.csv")
        zip_local = Path(tmp) / "annotated.zip"
        exports.write_annotated_zip(zip_local, ordered)
        save_local(zip_local, f"{prefix}/annotated.zip")
    return {"count": len(items), "vqa_accuracy": metrics.get("vqa_accuracy")}
