"""The newcomer's path through a project: dataset ready -> model trained -> first question -> batch evaluation.

The project page shows these steps, each with a link, until the project has done every one of them once;
then the panel disappears. Each step is read from the database, so it is true for every member.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from django.urls import reverse


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    done: bool
    url: str | None
    action: str
    hint: str
    is_next: bool = False


def first_steps(project, *, can_edit: bool) -> list[Step] | None:
    """The four steps for ``project`` (None once all are done). Links only where the user can act."""
    from django.db.models import Count

    from datasets_app.models import Dataset
    from evaluation_app.models import Evaluation, Prediction
    from training_app.models import TrainingRun

    # the dataset to train on: the largest ready one (in the demo, the train split rather than the holdout set)
    ready = (Dataset.objects.filter(project=project, status="succeeded").annotate(n=Count("items"))
             .order_by("-n", "created_at").first())
    run = TrainingRun.objects.filter(project=project, status="succeeded").order_by("-created_at").first()
    asked = Prediction.objects.filter(project=project).exclude(kind=Prediction.Kind.BATCH).exists()
    evaluated = Evaluation.objects.filter(project=project).exists()
    if ready and run and asked and evaluated:
        return None
    run_page = reverse("evaluation:run", args=[run.pk]) if run else None
    edit = can_edit
    steps = [
        Step("dataset", "Add a dataset", bool(ready),
             reverse("datasets:upload", args=[project.pk]) if edit else None, "Upload a dataset",
             "A ZIP of images and a questions file; PiggyBack checks and cleans it."),
        Step("train", "Train a model", bool(run),
             reverse("training:start", args=[ready.pk]) if (ready and edit) else None, "Train a model",
             "Fine-tune the default model with the default settings; a progress bar shows how it goes."),
        Step("ask", "Ask a question", asked, run_page if edit else None, "Ask the model",
             "Pick a sample image the model has not seen, or upload your own, and see where it looked."),
        Step("batch", "Evaluate a whole test set", evaluated,
             (run_page + "?tab=batch") if (run_page and edit) else None, "Run a batch evaluation",
             "Answer every question of a test set at once and get the official VQA accuracy."),
    ]
    first_open = next(i for i, s in enumerate(steps) if not s.done)
    return [replace(s, is_next=(i == first_open)) for i, s in enumerate(steps)]
