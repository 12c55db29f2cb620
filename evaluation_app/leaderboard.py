"""The leaderboard of a project's evaluation dataset: every fine-tuned run and zero-shot model evaluated on it,
side by side (the latest finished evaluation of each), best VQA accuracy first."""
from __future__ import annotations

from evaluation_app.models import Evaluation
from piggyback.targets import target_of

COLUMNS = {  # sort key -> (label, row key, best first = descending)
    "vqa_accuracy": ("VQA accuracy", "vqa_accuracy", True),
    "ece": ("ECE", "ece", False),
    "questions_per_second": ("Questions / s", "questions_per_second", True),
    "training_seconds": ("Training time", "training_seconds", False),
    "model_parameters": ("Model size", "model_parameters", False),
}


def _target(evaluation: Evaluation) -> dict:
    target = target_of(evaluation)
    return {**target.as_target_dict(), "key": target.key if target.target_type == "model" else ""}


def _row(evaluation: Evaluation) -> dict:
    m = evaluation.metrics or {}
    run = evaluation.training_run
    ece = getattr(evaluation, "ece", None)  # the calibration field (a nullable column once calibration lands)
    if ece is None:
        ece = m.get("ece")
    return {
        "target": _target(evaluation),
        "evaluation": evaluation.pk,
        "vqa_accuracy": m.get("vqa_accuracy"),
        "exact_match": m.get("exact_match"),
        "per_answer_type": m.get("per_answer_type") or {},
        "per_question_type": m.get("per_question_type") or {},
        "ece": ece,
        "questions_per_second": m.get("questions_per_second"),
        "training_seconds": (run.metrics or {}).get("train_seconds") if run is not None else None,
        "model_parameters": m.get("model_parameters"),
        "base_model": (run.model.name if run is not None else str(evaluation.model or "")),
        "count": m.get("labelled", m.get("count")),
        "finished_at": evaluation.finished_at,
    }


def leaderboard(project, dataset, order: str = "vqa_accuracy") -> list[dict]:
    """One row per target (run or zero-shot model): its latest succeeded evaluation on ``dataset``.

    Ordered best first by ``order`` (a key of :data:`COLUMNS`), rows without that value last, then by
    evaluation id; the default is VQA accuracy, highest first."""
    evaluations = (Evaluation.objects.filter(project=project, dataset=dataset, status="succeeded")
                   .select_related("training_run", "training_run__model", "model")
                   .order_by("-finished_at", "-pk"))
    seen, rows = set(), []
    for ev in evaluations:
        key = ("run", ev.training_run_id) if ev.training_run_id else ("model", ev.model_id)
        if key in seen:
            continue
        seen.add(key)
        rows.append(_row(ev))
    _label, field, descending = COLUMNS.get(order, COLUMNS["vqa_accuracy"])

    def sort_key(r):
        value = r[field]
        if value is None:
            return (1, 0.0, r["evaluation"])
        return (0, -value if descending else value, r["evaluation"])

    return sorted(rows, key=sort_key)


def evaluated_datasets(project):
    """Datasets of the project with at least one succeeded evaluation (the leaderboard's choices)."""
    from datasets_app.models import Dataset

    return (Dataset.objects.filter(project=project, evaluations__status="succeeded").distinct()
            .order_by("name", "version"))
