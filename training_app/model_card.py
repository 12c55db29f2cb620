"""The model card of a fine-tuned run: ``README.md`` in the Hugging Face model-card format (YAML front matter
written by ``huggingface_hub.ModelCardData``, then sections), shown on the run page and put in the export ZIP.

It reads what exists: the run's settings and validation metrics, the dataset and its version, the run's
finished evaluations (VQA accuracy per answer type and, where measured, the calibration error ECE)."""
from __future__ import annotations

from pathlib import PurePath

from training_app.models import TrainingRun

INTENDED_USE = (
    "Answering short questions about images like the ones it was fine-tuned on (same kind of pictures, same "
    "kind of questions, answers from the training answers). It is a classifier over the answers it has seen "
    "unless its family generates text.")
LIMITS = [
    "It only knows the answers present in its training data; a question needing another answer gets a wrong one.",
    "Accuracy was measured on held-out questions of the same dataset; images or questions of another kind "
    "(other devices, other wording, other languages) can score much lower.",
    "Confidence is the model's own score; a high confidence is not a guarantee (see Calibration).",
    "It was not tested for fairness across groups of people, and it must not be the only basis of a medical, "
    "legal or safety decision.",
]


def _base_model(run: TrainingRun) -> str:
    """The hub id the run started from ('' when trained from scratch or from a local folder)."""
    source = run.model.source or ""
    if not source or PurePath(source).is_absolute() or source.startswith("."):
        return ""
    return source


def _pct(value) -> str:
    return "n/a" if value is None else f"{float(value):.2f} %"


def _evaluations(run: TrainingRun) -> list:
    """The latest succeeded evaluation of the run per dataset (or per upload)."""
    seen, out = set(), []
    for ev in run.evaluations.filter(status="succeeded").select_related("dataset").order_by("-finished_at", "-pk"):
        key = ev.dataset_id or f"upload-{ev.pk}"
        if key not in seen:
            seen.add(key)
            out.append(ev)
    return out


def _metrics_section(run: TrainingRun, evaluations: list) -> list[str]:
    m = run.metrics or {}
    val = m.get("val_metrics") or {}
    lines = ["## Evaluation", "",
             f"Validation (held-out images of the training dataset, {m.get('num_val') or 'n/a'} questions): "
             f"VQA accuracy **{_pct(run.vqa_accuracy)}**.", ""]
    per_type = dict(val.get("per_answer_type") or {})
    if per_type:
        lines += ["| answer type | VQA accuracy |", "|---|---|"]
        lines += [f"| {t} | {_pct(v)} |" for t, v in sorted(per_type.items())]
        lines.append("")
    for ev in evaluations:
        em = ev.metrics or {}
        if em.get("vqa_accuracy") is None:
            continue
        where = f"dataset “{ev.dataset}” (version {ev.dataset.version})" if ev.dataset_id else f"upload “{ev.name}”"
        lines += [f"Evaluation {ev.pk} on {where}, {em.get('count', 'n/a')} labelled questions: VQA accuracy "
                  f"**{_pct(em.get('vqa_accuracy'))}**.", ""]
        types = em.get("per_answer_type") or {}
        if types:
            lines += ["| answer type | VQA accuracy |", "|---|---|"]
            lines += [f"| {t} | {_pct(v)} |" for t, v in sorted(types.items())]
            lines.append("")
    return lines


def _calibration_section(run: TrainingRun, evaluations: list) -> list[str]:
    m = run.metrics or {}
    lines = ["## Calibration", ""]
    found = False
    for key, label in (("temperature", "Temperature (scaling of the answer scores)"), ("ece", "Validation ECE")):
        value = m.get(key, (m.get("val_metrics") or {}).get(key))
        if value is not None:
            lines.append(f"- {label}: {float(value):.4f}")
            found = True
    for ev in evaluations:
        ece = getattr(ev, "ece", None)
        if ece is None:
            ece = (ev.metrics or {}).get("ece")
        if ece is not None:
            lines.append(f"- Expected calibration error (ECE) on evaluation {ev.pk}: {float(ece):.4f}")
            found = True
    if not found:
        lines.append("Not measured for this run: treat the confidence as a ranking of the answers, not as a "
                     "probability.")
    return lines + [""]


def model_card(run: TrainingRun) -> str:
    """The README.md text of a run's model card."""
    from huggingface_hub import ModelCard, ModelCardData

    dataset = run.dataset
    evaluations = _evaluations(run)
    base = _base_model(run)
    data = ModelCardData(
        library_name="transformers", base_model=base or None,
        datasets=[f"{dataset.name} (version {dataset.version})"], metrics=["accuracy"],
        pipeline_tag="visual-question-answering",
        tags=["visual-question-answering", "vqa", "piggyback", run.model.family],
    )
    m = run.metrics or {}
    settings = dict(run.params or {})
    lines = [
        f"# {run.name or f'Run {run.pk}'}", "",
        f"A {run.model.name} model fine-tuned with PiggyBack for visual question answering.", "",
        "## Model details", "",
        f"- Base model: {base or run.model.name + ' (trained from scratch)'} (PiggyBack key `{run.model.key}`, "
        f"family {run.model.family}, task {run.model.task})",
        f"- Training run: {run.pk}, finished {run.finished_at:%Y-%m-%d %H:%M} UTC" if run.finished_at
        else f"- Training run: {run.pk} ({run.status})",
        f"- Device: {run.device or 'n/a'}", "",
        "## Training data", "",
        f"- Dataset: “{dataset.name}”, version {dataset.version} (PiggyBack dataset {dataset.pk}"
        + (f", made from version {dataset.parent.version} with experts' corrections" if dataset.parent_id else "")
        + ")",
        f"- Questions: {m.get('num_train', 'n/a')} for training, {m.get('num_val', 'n/a')} for validation; "
        f"{m.get('num_answers', 'n/a')} distinct answers", "",
        "## Training settings", "",
        f"Preset: {run.preset or 'custom'}.", "",
        "| setting | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(settings.items())],
        "",
        f"Epochs run: {m.get('epochs_run', 'n/a')} (best epoch {m.get('best_epoch', 'n/a')}); training time "
        f"{m.get('train_seconds', 'n/a')} s.", "",
        *_metrics_section(run, evaluations),
        *_calibration_section(run, evaluations),
        "## Intended use", "", INTENDED_USE, "",
        "## Known limits", "", *[f"- {x}" for x in LIMITS], "",
        "## How to load it", "",
        "Unzip the export; `model/` is a folder that `from_pretrained` loads (its `piggyback.json` names the "
        "family). PiggyBack baseline models load with `gpu_worker.models.baseline.PiggyBaselineForVQA`.", "",
    ]
    card = ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines))
    return str(card.content)
