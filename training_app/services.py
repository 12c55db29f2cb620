"""Fine-tuning rules: who may train what with which settings, and the only place that enqueues training.

* :func:`start_run` checks the role (editor), the dataset (cleaned, with answers), the model (enabled and
  available) and every hyper-parameter (per-field messages), then queues ``train_job`` on commit.
* :func:`cancel_run`, :func:`resume_run` (same row, continues from the checkpoint in its output folder),
  :func:`rerun` (new row, same settings), :func:`export_zip` (model folder + metrics.json + train.log).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

from django.conf import settings
from django.db import transaction

from gpu_worker.errors import Conflict, InvalidInput, StorageFull, Unavailable
from piggyback import files
from piggyback import jobs as pjobs
from piggyback.jobs import RunStatus
from piggyback.tenancy import require_role
from training_app.models import PretrainedModel, TrainingRun

PARAM_LABELS = {
    "epochs": ("Epochs", "Passes over the training questions."),
    "learning_rate": ("Learning rate", "Step size of the optimiser (AdamW)."),
    "batch_size": ("Batch size", "Questions per training step; lower it if memory runs out."),
    "warmup_ratio": ("Warm-up share", "Share of steps with a rising learning rate."),
    "weight_decay": ("Weight decay", "Regularisation strength."),
    "val_fraction": ("Validation share", "Share of the images held out to measure accuracy."),
    "patience": ("Early-stop patience", "Stop after this many epochs without improvement (0 = never)."),
    "grad_accum_steps": ("Gradient accumulation", "Steps summed before each update (a larger effective batch)."),
    "freeze_encoder": ("Freeze the pretrained encoder", "Train only the answer head: faster, less memory."),
    "seed": ("Random seed", "Same seed + same data = same result."),
    "max_train_items": ("Max training questions", "Use a random subset of this size (empty = all)."),
    "num_beams": ("Beams", "Beam search width when generating answers."),
    "max_new_tokens": ("Max answer length", "Tokens generated per answer."),
    "image_size": ("Image size", "Images are resized to this many pixels per side."),
}
PRESET_LABELS = {"quick": "Quick", "balanced": "Balanced", "thorough": "Thorough"}


class TrainingError(InvalidInput):
    """A start request the user can fix (400); ``errors`` maps a field ("model", "dataset", "epochs", ...) to a
    message."""

    def __init__(self, message: str, errors: dict | None = None, **kwargs):
        super().__init__(message, errors=errors, **kwargs)


class RunStateError(Conflict):
    """The run is not in a state that allows this (409): cancel a finished run, export an unfinished one..."""


NO_SPACE_ERRNOS = {28, 27, 122}  # ENOSPC, EFBIG (file-size quota), EDQUOT


def _registry():
    from gpu_worker.models import registry

    return registry


def presets() -> dict:
    return dict(_registry().PRESETS)


def run_prefix(run: TrainingRun) -> str:
    return f"projects/{run.project_id}/runs/{run.pk}"


# ------------------------------------------------------------------------------------------------
# Models and parameters
# ------------------------------------------------------------------------------------------------
def selectable_models():
    """Models the UI may offer: enabled AND available."""
    return PretrainedModel.objects.filter(enabled=True, available=True).order_by("family", "key")


def get_model(key_or_model) -> PretrainedModel | None:
    if isinstance(key_or_model, PretrainedModel):
        return key_or_model
    if not key_or_model:
        return None
    return PretrainedModel.objects.filter(key=str(key_or_model)).first()


def param_limits(model: PretrainedModel) -> dict:
    """{name: limits} of every hyper-parameter this model accepts (the registry's rules)."""
    return _registry().param_limits(model.default_params or {}, model.task)


def resolve_params(model: PretrainedModel, params: dict | None = None, preset: str | None = None) -> tuple[dict, dict]:
    """(params, errors) from the registry's one resolver (the worker resolves the same way); ``errors``
    maps each bad field to a readable message."""
    out, raw = _registry().resolve_training_params(model.default_params or {}, model.task, params, preset,
                                                   strict=True)
    errors = {}
    for name, (kind, detail, lim) in raw.items():
        label = PARAM_LABELS.get(name, (name,))[0]
        if kind == "preset":
            errors[name] = f"Unknown preset “{preset}”; choose one of {', '.join(presets())}."
        elif kind == "unknown":
            errors[name] = f"“{name}” is not a setting of {model.name}; known settings: {detail}."
        elif kind == "range":
            errors[name] = f"{label} must be between {lim['min']:g} and {lim['max']:g} ({detail})."
        elif "min" in lim:
            errors[name] = f"{label} {detail} (allowed: {lim['min']:g} to {lim['max']:g})."
        else:
            errors[name] = f"{label} {detail}."
    return out, errors


def preset_values(model: PretrainedModel) -> dict:
    """{preset: resolved params} for the start page (the values the worker will train with)."""
    return {name: _registry().resolve_training_params(model.default_params or {}, model.task, None, name)[0]
            for name in presets()}


def worker_memory_gb() -> float:
    """GPU memory of the training workers (settings / env GPU_WORKER_MEMORY_GB; 0 = unknown or CPU only)."""
    value = getattr(settings, "GPU_WORKER_MEMORY_GB", None)
    if value is None:
        value = os.environ.get("GPU_WORKER_MEMORY_GB", "0")
    try:
        return max(0.0, float(value or 0))
    except (TypeError, ValueError):
        return 0.0


def memory_warning(model: PretrainedModel, params: dict | None = None) -> str:
    """A warning when fine-tuning likely does not fit the workers ('' when fine)."""
    need = float(model.finetune_gpu_memory_gb or 0)
    have = worker_memory_gb()
    if model.family == "baseline" or need <= 0:
        return ""
    if have > 0 and need > have:
        hint = "" if (params or {}).get("freeze_encoder") else " Try “Freeze the pretrained encoder” or a smaller batch size."
        return (f"Fine-tuning {model.name} needs about {need:g} GB of GPU memory, but the workers have "
                f"{have:g} GB: it may run out of memory.{hint}")
    if have <= 0 and need > 1:
        return (f"No GPU worker is configured on this server: fine-tuning {model.name} (about {need:g} GB of GPU "
                "memory) will run on a CPU and be very slow.")
    return ""


def queue_for(model: PretrainedModel) -> str:
    if model.family == "baseline" and getattr(settings, "CPU_ONLY", False):
        return "default"
    return "gpu"


# ------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------
def labelled_count(dataset) -> int:
    return dataset.items.exclude(answers=[]).count()


def dataset_problem(dataset) -> str:
    if dataset.status != RunStatus.SUCCEEDED:
        return f"The dataset “{dataset.name}” is not ready (its cleaning is {dataset.status}); wait for it to finish."
    n = labelled_count(dataset)
    if n < 2:
        return (f"The dataset “{dataset.name}” has {n} question{'s' if n != 1 else ''} with answers; training needs "
                "answers. Upload a questions file with an answer column (or VQAv2 annotations).")
    return ""


def _enqueue(run: TrainingRun, *, resume: bool) -> str:
    from training_app.jobs import train_job

    return pjobs.enqueue(run, train_job, queue=queue_for(run.model), resume=resume)


def start_run(user, dataset, model, params: dict | None = None, preset: str | None = None, name: str = "") -> TrainingRun:
    """Create a TrainingRun and queue it; raises TrainingError (400) or PermissionDenied (403)."""
    require_role(user, dataset, "editor")
    errors = {}
    model_row = get_model(model)
    if model_row is None:
        errors["model"] = "Choose a model to fine-tune." if not model else f"There is no model called “{model}”."
    elif not model_row.enabled:
        errors["model"] = f"{model_row.name} has been disabled by an administrator."
    elif not model_row.available:
        errors["model"] = f"{model_row.name} is not available on this server: {model_row.availability_reason}"
    problem = dataset_problem(dataset)
    if problem:
        errors["dataset"] = problem
    if not preset and not params:
        preset = "balanced"
    resolved = {}
    if model_row is not None:
        resolved, perr = resolve_params(model_row, params, preset)
        errors.update(perr)
    if errors:
        first = next(iter(errors.values()))
        raise TrainingError(first if len(errors) == 1 else f"{len(errors)} problems: {first}", errors)
    warnings = [w for w in [memory_warning(model_row, resolved)] if w]
    with transaction.atomic():
        run = TrainingRun.objects.create(
            project=dataset.project, dataset=dataset, model=model_row, created_by=user, preset=preset or "",
            params=resolved, metrics={"warnings": warnings},
            name=(name or f"{model_row.name} on {dataset.name}")[:120],
        )
        run._update(output_dir=run_prefix(run))
        _enqueue(run, resume=False)
    return run


def cancel_run(user, run: TrainingRun) -> TrainingRun:
    require_role(user, run, "editor")
    if not pjobs.cancel(run):
        raise RunStateError(f"This run has already {run.status}; there is nothing to cancel.")
    run.refresh_from_db()
    return run


def resume_run(user, run: TrainingRun) -> TrainingRun:
    """Queue a failed or cancelled run again on the same row; training continues from its checkpoint."""
    require_role(user, run, "editor")
    run.refresh_from_db()
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise RunStateError(f"Only a failed or cancelled run can be resumed; this one is {run.status}.")
    problem = dataset_problem(run.dataset)
    if problem:
        raise RunStateError(problem, "dataset")
    if not (run.model.enabled and run.model.available):
        raise Unavailable(f"{run.model.name} is not available any more; it cannot be resumed.")
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if locked.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise RunStateError("This run was resumed already.")
        run._update(vqa_accuracy=None)
        _enqueue(run, resume=True)
    run.refresh_from_db()
    return run


def retrain(user, run: TrainingRun, dataset=None) -> TrainingRun:
    """Repeat a run's model and settings on another version of its dataset (default: the newest ready version
    above the one it trained on)."""
    from datasets_app.versions import newer_version

    require_role(user, run, "editor")
    if dataset is None:
        dataset = newer_version(run.dataset)
        if dataset is None:
            msg = (f"“{run.dataset}” (version {run.dataset.version}) has no newer ready version; create one from the "
                   "corrections first.")
            raise TrainingError(msg, {"dataset": msg})
    if dataset.project_id != run.project_id:
        msg = f"Dataset {dataset.pk} is not a dataset of this run's project."
        raise TrainingError(msg, {"dataset": msg})
    new = start_run(user, dataset, run.model, params=dict(run.params), preset=run.preset or None,
                    name=f"{run.model.name} on {dataset}")
    new._update(rerun_of=run)
    return new


def rerun(user, run: TrainingRun) -> TrainingRun:
    """A new run with the same dataset, model and settings."""
    require_role(user, run, "editor")
    name = run.name if run.name.startswith("Re-run") else f"Re-run of {run.name or run.pk}"
    new = start_run(user, run.dataset, run.model, params=dict(run.params), preset=run.preset or None, name=name)
    new._update(rerun_of=run)
    return new


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------
EXPORT_README = """PiggyBack fine-tuned model: {name}
Model: {model} (family {family}, task {task}); validation VQA accuracy: {acc}

model/         a Hugging Face transformers folder (config.json, model.safetensors, processor files,
               id2label) - load it with from_pretrained(<path to model/>); piggyback.json names the family.
metrics.json   training history (loss and validation accuracy per epoch) and the final metrics.
train.log      the training log.

PiggyBack baseline models use their own small model class:
    from gpu_worker.models.baseline import PiggyBaselineForVQA
    model = PiggyBaselineForVQA.from_pretrained("model")
Transformer families load with their transformers class, e.g. ViltForQuestionAnswering.from_pretrained("model").
"""


def export_name(run: TrainingRun) -> str:
    return f"{run_prefix(run)}/export/piggyback-run-{run.pk}.zip"


def export_zip(run: TrainingRun) -> str:
    """Build (once) and store the export ZIP of a succeeded run; returns its storage name."""
    from django.core.files.storage import default_storage

    if run.status != RunStatus.SUCCEEDED:
        raise RunStateError(f"Only a finished (succeeded) run can be exported; this one is {run.status}.")
    name = export_name(run)
    if default_storage.exists(name):
        return name
    prefix = (run.output_dir or run_prefix(run)).rstrip("/")
    # only what the ZIP holds comes from a remote storage (not the checkpoints)
    model_dir = files.local_dir(f"{prefix}/model", max_age=300)
    if not (model_dir / "config.json").is_file():
        raise Unavailable("The fine-tuned model files of this run are missing; re-run it to export.")
    extras = {}
    for extra in ("metrics.json", "train.log"):
        try:
            extras[extra] = files.local_copy(f"{prefix}/{extra}")
        except FileNotFoundError:
            continue
    tmp_dir = Path(settings.WORKER_CACHE_DIR) / "exports"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"run-{run.pk}-{os.getpid()}.zip"
    try:
        _write_export(run, extras, model_dir, tmp)
        files.save_local(tmp, name)
    except OSError as exc:
        if default_storage.exists(name):  # never leave a truncated export behind
            default_storage.delete(name)
        if exc.errno in NO_SPACE_ERRNOS:
            raise StorageFull(
                "There is not enough disk space to build the export ZIP. The fine-tuned model itself is safe; "
                "free some space (or ask an administrator to) and download it again."
            ) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return name


def _write_export(run: TrainingRun, extras: dict, model_dir: Path, tmp: Path) -> None:
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                zf.write(path, f"model/{path.relative_to(model_dir).as_posix()}")
        for extra, path in extras.items():
            if path.is_file():
                zf.write(path, extra)
        acc = "n/a" if run.vqa_accuracy is None else f"{run.vqa_accuracy:.2f} %"
        zf.writestr("README.txt", EXPORT_README.format(name=run.name, model=run.model.key, family=run.model.family,
                                                       task=run.model.task, acc=acc))
        from training_app.model_card import model_card

        card = model_card(run)  # the Hugging Face model card, beside the files and inside the model folder
        zf.writestr("README.md", card)
        zf.writestr("model/README.md", card)
