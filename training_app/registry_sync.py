"""Keep the PretrainedModel table in step with gpu_worker's registry (offline and fast).

* :func:`sync_models` creates a row per registry spec and refreshes the code-owned fields (family, task,
  flags, default params, description). Admin decisions are kept: ``enabled`` and ``source`` are only set
  when the row is created. Availability is recomputed for every row (also imported checkpoints).
* :func:`import_checkpoint` registers a local fine-tuned / pretrained folder as its own selectable model.
"""
from __future__ import annotations

import dataclasses
import os

from django.db import transaction
from django.utils import timezone

from training_app.models import PretrainedModel

NAMES = {
    "baseline-rnn": "Baseline: CNN + GRU (default, CPU friendly)",
    "baseline-bow": "Baseline: CNN + bag of words (fastest)",
    "baseline-minilm": "Baseline: CNN + MiniLM question encoder",
    "vilt": "ViLT (vision-and-language transformer)",
    "vilt-vqa": "ViLT fine-tuned on VQAv2 (answers at once)",
    "visualbert": "VisualBERT",
    "lxmert": "LXMERT",
    "blip": "BLIP (generates answers)",
    "blip2": "BLIP-2 (generates answers, large)",
    "florence2": "Florence-2 (generates answers)",
}


def _registry():
    from gpu_worker.models import registry

    return registry


def check_availability(row: PretrainedModel) -> dict:
    """Availability of a row: its registry spec with the row's own source (admins may point elsewhere)."""
    registry = _registry()
    try:
        spec = registry.get_spec(row.registry_key)
    except KeyError:
        return {"available": False,
                "reason": f"This server's code has no model family {row.registry_key!r} any more."}
    spec = dataclasses.replace(spec, default_source=row.source or "")
    if row.source and os.path.isabs(row.source) and not os.path.isdir(row.source):
        return {"available": False, "reason": f"The weights folder {row.source} does not exist on this server."}
    return registry.availability(spec)


def refresh_availability(row: PretrainedModel, save: bool = True) -> PretrainedModel:
    info = check_availability(row)
    row.available = bool(info.get("available"))
    row.availability_reason = str(info.get("reason", ""))[:300]
    row.checked_at = timezone.now()
    if save:
        row.save(update_fields=["available", "availability_reason", "checked_at"])
    return row


@transaction.atomic
def sync_models() -> dict:
    """Seed/update rows from the registry; returns {"created": [...], "updated": [...], "available": [...]}."""
    registry = _registry()
    created, updated = [], []
    for spec in registry.all_specs():
        fields = {
            "family": spec.family,
            "task": spec.task,
            "registry_key": spec.key,
            "description": spec.description,
            "zero_shot": spec.zero_shot,
            "needs_features": spec.needs_features,
            "can_explain": spec.can_explain,
            "finetune_gpu_memory_gb": spec.finetune_gpu_memory_gb,
            "default_params": dict(spec.default_params),
        }
        row = PretrainedModel.objects.filter(key=spec.key).first()
        if row is None:
            row = PretrainedModel(key=spec.key, name=NAMES.get(spec.key, spec.key), source=spec.default_source,
                                  enabled=True, **fields)
            created.append(spec.key)
        else:
            changed = [k for k, v in fields.items() if getattr(row, k) != v]
            for k in changed:
                setattr(row, k, fields[k])
            if changed:
                updated.append(spec.key)
        refresh_availability(row, save=False)
        row.save()
    # Rows not from the registry (imported checkpoints, admin-made ones): availability only.
    for row in PretrainedModel.objects.exclude(key__in=[s.key for s in registry.all_specs()]):
        refresh_availability(row)
    return {
        "created": created,
        "updated": updated,
        "available": list(PretrainedModel.objects.filter(available=True).values_list("key", flat=True)),
    }


class CheckpointImportError(ValueError):
    """A checkpoint folder that cannot be registered (message says why)."""


def import_checkpoint(folder: str, *, key: str, name: str = "", enabled: bool = True) -> PretrainedModel:
    """Register a local model folder (a PiggyBack export or a hub snapshot) as a selectable model."""
    from django.utils.text import slugify

    from gpu_worker.predict import detect_model_key

    folder = os.path.abspath(folder)
    if not os.path.isdir(folder):
        raise CheckpointImportError(f"The folder {folder} does not exist.")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise CheckpointImportError(f"{folder} has no config.json: it is not a transformers model folder.")
    registry_key = detect_model_key(folder)
    if not registry_key:
        raise CheckpointImportError(f"Could not tell which model family {folder} belongs to (no piggyback.json and an "
                           "unknown model_type in config.json).")
    try:
        spec = _registry().get_spec(registry_key)
    except KeyError as exc:
        raise CheckpointImportError(str(exc)) from None
    slug = slugify(key)
    if not slug or slug != key:
        raise CheckpointImportError(f"The key {key!r} must be a slug (letters, digits, hyphens), e.g. {slugify(key) or 'my-model'!r}.")
    if slug == spec.key or slug in [s.key for s in _registry().all_specs()]:
        raise CheckpointImportError(f"The key {key!r} is a built-in model; choose another one.")
    row, _ = PretrainedModel.objects.update_or_create(
        key=slug,
        defaults={
            "name": name or slug,
            "family": spec.family,
            "task": spec.task,
            "registry_key": spec.key,
            "source": folder,
            "description": f"Imported from {folder} ({spec.description})",
            "enabled": enabled,
            # Weights are present, so a fine-tuned classifier or generator can answer at once.
            "zero_shot": True,
            "needs_features": spec.needs_features,
            "can_explain": spec.can_explain,
            "finetune_gpu_memory_gb": spec.finetune_gpu_memory_gb,
            "default_params": dict(spec.default_params),
        },
    )
    return refresh_availability(row)
