"""What can answer questions: a fine-tuned ``TrainingRun`` or a zero-shot ``PretrainedModel``.

Both models implement :class:`AnswerTarget`, so the evaluation code asks the target what it needs instead of
checking its type. Predictions and batch evaluations point at exactly one of the two (a database constraint
says so); :meth:`AnswerTarget.target_fields` gives the pair of foreign keys to store.
"""
from __future__ import annotations


class AnswerTarget:
    """The small interface of a model that answers: mixed into TrainingRun and PretrainedModel."""

    #: "training_run" or "model": the API's ``target.type`` and the foreign key that stores it
    target_type: str = ""

    @property
    def pretrained(self):
        """The PretrainedModel behind this target (its family, task and registry key)."""
        raise NotImplementedError

    @property
    def trained_on_dataset_id(self) -> int | None:
        """The dataset a fine-tuned run learnt from (None for a zero-shot model)."""
        return None

    def target_fields(self) -> dict:
        """The foreign keys of a Prediction or Evaluation that asked this target."""
        return {"training_run": self if self.target_type == "training_run" else None,
                "model": self if self.target_type == "model" else None}

    def as_target_dict(self) -> dict:
        return {"type": self.target_type, "id": self.pk, "name": str(self)}

    def check_can_answer(self) -> None:
        """Raise an AppError (409) when the target cannot answer now."""
        raise NotImplementedError

    def model_folder(self) -> str:
        """The folder (or hub id) ``from_pretrained`` loads."""
        raise NotImplementedError


def target_of(row):
    """The target a Prediction or Evaluation asked."""
    return row.training_run if row.training_run_id else row.model


def exactly_one_target(name: str):
    """The constraint: exactly one of ``training_run`` / ``model`` is set."""
    from django.db.models import CheckConstraint, Q

    return CheckConstraint(
        condition=(Q(training_run__isnull=False, model__isnull=True) | Q(training_run__isnull=True, model__isnull=False)),
        name=name, violation_error_message="Give either a training run or a zero-shot model, not both and not neither.")
