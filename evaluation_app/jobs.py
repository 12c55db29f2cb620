"""RQ entry point of a batch evaluation: clean the upload, predict every question with the cached model,
draw each overlay once, store predictions + metrics, and pack the downloads."""
from __future__ import annotations

import contextlib
import tempfile
import time
from array import array
from itertools import groupby
from operator import itemgetter
from pathlib import Path, PurePosixPath

import numpy as np
from django.conf import settings
from PIL import Image

from evaluation_app import exports, model_cache
from evaluation_app.models import Prediction, delete_predictions_in, margin_of
from gpu_worker import Cancelled, UserFacingError
from gpu_worker.items import ItemColumns
from piggyback.files import local_copy, save_local, save_tree
from piggyback.jobs import background_job, db_retry

# share of the progress bar: cleaning, then the chunks (answering, drawing, saving), then packing the downloads
_CLEAN, _WORK = 0.15, 0.8
_ANSWER, _DRAW = 0.8, 0.15   # of a chunk's share; saving takes the rest


def _scaled(reporter, start, span):
    def report(progress, stage="", metrics=None):
        reporter(start + span * max(0.0, min(1.0, float(progress))), stage)
    return report


class _DatasetChunks:
    """The evaluated dataset's questions, read from the database a chunk at a time: every question of an image in
    the same chunk, about ``size`` questions a chunk (an image with more is a chunk of its own), images in name
    order. Nothing of the dataset is held between chunks, whatever its size.

    ``n``: how many questions; ``images``: how many images; ``thumbs``: {stored image: thumbnail} (made at
    cleaning; items from before then get theirs on first view)."""

    def __init__(self, dataset, size: int):
        from datasets_app.models import DatasetItem
        from datasets_app.services import UploadError, item_image_root, require_ready

        try:
            require_ready(dataset)
            self.qs = DatasetItem.objects.filter(dataset=dataset)
            self.n = self.qs.count()
            if not self.n:
                raise UserFacingError(f"The dataset “{dataset}” has no questions to evaluate.")
            self.image_root, self.prefix = item_image_root(dataset, self.qs)
        except UploadError as exc:
            raise UserFacingError(str(exc)) from exc
        self.size = size
        self.images = self.qs.order_by().values("image").distinct().count()
        self.thumbs = dict(self.qs.exclude(thumbnail="").order_by().values_list("image", "thumbnail").distinct())

    def __iter__(self):
        prefix, shared = self.prefix, {}

        def one(value):
            return shared.setdefault(value, value)

        chunk: list = []
        rows = self.qs.order_by("image", "row", "pk").values_list(
            "image", "question", "answers", "answer_type", "question_type", "row", "image_original_name")
        for stored, of_image in groupby(rows.iterator(chunk_size=2000), key=itemgetter(0)):
            shared.clear()
            rel = stored[len(prefix):] if stored.startswith(prefix) else PurePosixPath(stored).name
            same = [{"image": rel, "stored": stored, "question": question,
                     "answers": one(tuple(map(one, answers or ()))), "answer_type": one(atype),
                     "question_type": one(qtype), "row": row, "image_original_name": original}
                    for _, question, answers, atype, qtype, row, original in of_image]
            if chunk and len(chunk) + len(same) > self.size:
                yield chunk
                chunk = []
            chunk.extend(same)
        if chunk:
            yield chunk


class _MemoryChunks:
    """An uploaded evaluation's cleaned questions (held as compact columns) in chunks of whole images, each item
    with the storage name of its image."""

    def __init__(self, items, stored: dict, size: int):
        self.items, self.stored, self.size, self.n = items, stored, size, len(items)

    def __iter__(self):
        for indices in question_chunks(self.items, self.size):
            chunk = [self.items[i] for i in indices]
            for item in chunk:
                item["stored"] = self.stored.get(item["image"], "")
            yield chunk


UPLOAD_ITEM_KEYS = ("image", "thumbnail", "question", "answers", "answer_type", "question_type", "row",
                    "image_original_name")
_KEEP_DROPPED = 200   # rows listed on the evaluation (the counts cover them all)


class _UploadItems:
    """Cleaning's sink for an uploaded evaluation: the kept questions go, chunk by chunk, into compact columns
    (answers as shared tuples, repeated strings shared), as a dataset's do, instead of the cleaning's item dicts
    (~1.3 KB a question). Only the first dropped rows are kept, for the page."""

    def __init__(self):
        self.items = ItemColumns(UPLOAD_ITEM_KEYS)
        self.dropped: list = []
        self._shared: dict = {}

    def _one(self, value):
        return self._shared.setdefault(value, value)

    def add_items(self, items: list) -> None:
        one = self._one
        for it in items:
            self.items.append_values(it["image"], it["thumbnail"], one(it["question"]),
                                     one(tuple(map(one, it["answers"] or ()))), one(it["answer_type"]),
                                     one(it["question_type"]), it["row"], one(it["image_original_name"]))

    def add_dropped(self, dropped: list) -> None:
        self.dropped.extend(dropped[:max(0, _KEEP_DROPPED - len(self.dropped))])


def _parameter_count(adapter):
    """Parameters of the loaded model (its size on the leaderboard); None when it is not a torch module."""
    model = getattr(adapter, "model", None)
    try:
        return int(sum(p.numel() for p in model.parameters()))
    except (AttributeError, TypeError):
        return None


def _calibration_of(confidences, scores) -> tuple[float, list]:
    """ECE and reliability bins of the labelled predictions (confidence vs official VQA accuracy), given their
    confidences and VQA scores in the items' order."""
    from gpu_worker.calibration import expected_calibration_error, reliability_bins

    conf = np.clip(np.asarray(confidences, dtype=np.float64), 0.0, 1.0)
    correct = np.asarray(scores, dtype=np.float64)
    return round(expected_calibration_error(conf, correct), 5), reliability_bins(conf, correct)


def chunk_size() -> int:
    return max(1, int(settings.EVAL_CHUNK_QUESTIONS))


def question_chunks(items: list, size: int) -> list[list[int]]:
    """Indices of ``items`` in chunks of about ``size`` questions, every question of an image in the same chunk
    (an image is decoded once for its answers and once for its overlays), images in first-appearance order, the
    indices of a chunk in the items' order; an image with more than ``size`` questions is a chunk of its own."""
    by_image: dict = {}
    for i, it in enumerate(items):
        by_image.setdefault(it["image"], []).append(i)
    chunks: list[list[int]] = []
    part: list[int] = []
    for indices in by_image.values():
        if part and len(part) + len(indices) > size:
            chunks.append(sorted(part))
            part = []
        part.extend(indices)
    if part:
        chunks.append(sorted(part))
    return chunks


def delete_predictions(row) -> int:
    """Delete every prediction of the evaluation, a batch at a time (see delete_predictions_in)."""
    return delete_predictions_in(Prediction.objects.filter(evaluation=row))


class _Batch:
    """What one batch evaluation keeps between chunks: the metrics' running sums (:class:`Tally`) and the
    confidence / VQA score of each labelled question (for the calibration, 16 bytes a question), nothing else."""

    def __init__(self, row, chunks, image_root, thumbs, gen):
        from gpu_worker.metrics import Tally

        self.row, self.chunks, self.image_root, self.thumbs, self.gen = row, chunks, image_root, thumbs, gen
        self.n = chunks.n
        self.tally = Tally()
        self.labelled = 0
        self.confidence, self.score = array("d"), array("d")   # of the labelled questions
        self.predict_seconds = 0.0
        self.done = 0
        self.is_run = row.training_run_id is not None

    def progress(self, within_chunk: float, size: int) -> float:
        return _CLEAN + _WORK * (self.done + within_chunk * size) / max(1, self.n)

    def overlays(self, chunk, preds, reporter) -> list[str]:
        """Each prediction's boxes drawn on its image, image by image: one decoded photo in memory at a time."""
        from evaluation_app.services import store_overlay

        out = [""] * len(chunk)
        by_image: dict = {}
        for k, (item, pred) in enumerate(zip(chunk, preds)):
            if pred.get("regions"):
                by_image.setdefault(item["image"], []).append(k)
        drawn = 0
        for image, positions in by_image.items():
            if reporter.should_cancel():
                raise Cancelled()
            reporter(self.progress(_ANSWER + _DRAW * drawn / len(chunk), len(chunk)),
                     f"Drawing attention maps: {self.done + drawn:,} of {self.n:,}")
            with Image.open(Path(self.image_root) / image) as im:
                rgb = im.convert("RGB")
            for k in positions:
                out[k] = store_overlay(rgb, preds[k]["regions"][:5], f"projects/{self.row.project_id}/overlays/"
                                       f"eval-{self.row.pk}/{self.done + k + 1}-boxes.png")
            drawn += len(positions)
            del rgb
        return out

    def save(self, chunk, preds, overlays) -> None:
        """The chunk's predictions as rows; counts them into the metrics and keeps the calibration numbers."""
        row, objs = self.row, []
        for item, pred, overlay in zip(chunk, preds, overlays):
            stored = item["stored"]
            score = self.tally.add(pred["answer"], item)   # None for a question without answers
            self.labelled += bool(item.get("answers"))
            obj = Prediction(
                project_id=row.project_id, kind=Prediction.Kind.BATCH, evaluation=row, user_id=row.created_by_id,
                training_run_id=row.training_run_id if self.is_run else None,
                model_id=None if self.is_run else row.model_id,
                row=item.get("row"), image=stored, thumbnail=self.thumbs.get(stored, ""),
                image_original_name=str(item.get("image_original_name", ""))[:300], question=item["question"],
                answer=str(pred["answer"])[:300], confidence=float(pred.get("confidence") or 0.0),
                margin=margin_of(pred.get("top_k"), pred.get("confidence")), top_k=pred.get("top_k") or [],
                regions=(pred.get("regions") or [])[:5], overlay=overlay,
                expected_answers=list(item.get("answers") or []), answer_type=item.get("answer_type", ""),
                question_type=item.get("question_type", "")[:60], vqa_score=score, params=self.gen,
            )
            objs.append(obj)
            if score is not None:
                self.confidence.append(obj.confidence)
                self.score.append(score)
        Prediction.objects.bulk_create(objs, batch_size=1000)

    def metrics(self, parameters) -> tuple[dict, float | None]:
        metrics = {"count": self.n, "labelled": self.labelled, "predict_seconds": round(self.predict_seconds, 3),
                   "questions_per_second": round(self.n / self.predict_seconds, 2) if self.predict_seconds > 0 else None,
                   "model_parameters": parameters}
        ece = None
        if self.labelled:
            metrics.update(self.tally.summary())
            metrics["labelled"] = self.labelled
            ece, metrics["reliability"] = _calibration_of(np.frombuffer(self.confidence),
                                                          np.frombuffer(self.score))
        return metrics, ece


def _answer_all(batch: _Batch, adapter, reporter, *, top_k, batch_size, explain, gen) -> None:
    """Predict, draw and store the questions chunk by chunk: the memory a chunk needs is freed before the next."""
    from gpu_worker.predict import predict_batch

    for chunk in batch.chunks:
        size = len(chunk)

        def report(progress, stage="", metrics=None, size=size):
            done = batch.done + int(max(0.0, min(1.0, float(progress))) * size)
            reporter(batch.progress(_ANSWER * float(progress), size), f"Answered {done:,} of {batch.n:,} questions")

        started = time.perf_counter()
        preds = predict_batch(adapter, chunk, str(batch.image_root), top_k=top_k, batch_size=batch_size,
                              explain=explain, report=report, should_cancel=reporter.should_cancel, **gen)
        batch.predict_seconds += time.perf_counter() - started
        overlays = batch.overlays(chunk, preds, reporter)
        if reporter.should_cancel():
            raise Cancelled()
        batch.save(chunk, preds, overlays)
        batch.done += size
        del preds, overlays, chunk


def _pack_downloads(row, tmp, prefix) -> None:
    """predictions.csv and annotated.zip, written row by row from the stored predictions (never all in memory)."""
    ordered = (Prediction.objects.filter(evaluation=row).select_related("training_run", "model")
               .order_by("row", "pk").iterator(chunk_size=2000))
    csv_local, zip_local = Path(tmp) / "predictions.csv", Path(tmp) / "annotated.zip"
    with open(csv_local, "wb") as plain:
        exports.write_annotated_zip(zip_local, ordered, plain_csv=plain)
    save_local(csv_local, f"{prefix}/predictions.csv")
    save_local(zip_local, f"{prefix}/annotated.zip")


def _prepare(row, reporter, tmp, prefix, params):
    """(chunks of the questions to answer, local image root, {storage name: thumbnail}): the evaluated dataset's,
    read from the database a chunk at a time, or the upload's once cleaned like a dataset upload (its files
    stored)."""
    from gpu_worker.cleaning import clean_dataset

    if row.dataset_id is not None:
        # 1'. a ready dataset of the project: its cleaned items and stored images (shared, not copied)
        reporter(0.0, f"Reading the dataset “{row.dataset}”", force=True)
        chunks = _DatasetChunks(row.dataset, chunk_size())
        counts = {"rows_in": chunks.n, "rows_kept": chunks.n, "rows_dropped": 0, "level": "success",
                  "images_kept": chunks.images,
                  "dataset": row.dataset_id, "dataset_version": row.dataset.version}
        row._update(counts=counts, warnings=[], output_dir=prefix)
        return chunks, chunks.image_root, chunks.thumbs
    # 1. validate the upload exactly like a dataset upload (answers optional)
    reporter(0.0, "Checking your upload", force=True)
    result = clean_dataset(
        local_copy(row.questions_file.name), local_copy(row.images_file.name), tmp,
        report=_scaled(reporter, 0.0, _CLEAN), should_cancel=reporter.should_cancel,
        questions_name=params.get("questions_name"), images_name=params.get("images_name"),
        thumbnails=True,   # the lists show them, made once here like a dataset's
        sink=(sink := _UploadItems()),
    )
    items, image_root = sink.items, result.image_root
    counts = dict(result.counts, level=result.level, dropped=sink.dropped,
                  dropped_images=result.dropped_images[:_KEEP_DROPPED])
    row._update(counts=counts, warnings=list(result.warnings), output_dir=prefix)
    stored = {p.split("/images/", 1)[1]: p for p in save_tree(Path(image_root), f"{prefix}/images")}
    made = {p.split("/thumbs/", 1)[1]: p for p in save_tree(Path(result.thumb_root), f"{prefix}/thumbs")}
    thumbs = {stored[image]: made[thumb] for image, thumb in zip(items.column("image"), items.column("thumbnail"))
              if thumb in made and image in stored}
    return _MemoryChunks(items, stored, chunk_size()), image_root, thumbs


@background_job("evaluation_app.Evaluation")
def batch_eval_job(row, reporter):
    from evaluation_app.services import model_of

    target = row.training_run or row.model
    if target is None:
        raise UserFacingError("This evaluation has no model any more (it was deleted).")
    prefix = f"projects/{row.project_id}/evaluations/{row.pk}"
    params = dict(row.params or {})
    with tempfile.TemporaryDirectory(prefix="pb-eval-") as tmp:
        chunks, image_root, thumbs = _prepare(row, reporter, tmp, prefix, params)

        # 2. predict, draw each overlay once (shown again from storage) and store the answers, chunk by chunk;
        #    the model stays cached in this worker for the next evaluation
        gen = {k: v for k, v in params.items() if k in ("num_beams", "max_new_tokens")}
        explain = model_of(target).can_explain
        reporter(_CLEAN, f"Answering {chunks.n:,} questions", force=True)
        delete_predictions(row)  # a retried job starts clean
        batch = _Batch(row, chunks, image_root, thumbs, gen)
        try:
            with model_cache.use_model(model_cache.model_folder_for(target),
                                       model_cache.registry_key_for(target)) as adapter:
                _answer_all(batch, adapter, reporter, top_k=int(params.get("top_k", 5)),
                            batch_size=int(params.get("batch_size", 256)), explain=explain, gen=gen)
                parameters = _parameter_count(adapter)

            # 3. official VQA metrics when answers were given (summed while the chunks were stored)
            reporter(_CLEAN + _WORK, "Computing the metrics", force=True)
            metrics, ece = batch.metrics(parameters)
            row._update(metrics=metrics, ece=ece)
            count = batch.n
            del batch, chunks, thumbs   # the downloads below need none of them

            # 4. downloads, packed once
            reporter(_CLEAN + _WORK, "Packing the downloads", force=True)
            _pack_downloads(row, tmp, prefix)
        except BaseException:
            # a failed or cancelled evaluation shows no half of its answers (the pages only show a finished
            # evaluation's; a retry deletes them anyway)
            with contextlib.suppress(Exception):
                db_retry(delete_predictions, row)
            raise
    return {"count": count, "vqa_accuracy": metrics.get("vqa_accuracy")}
