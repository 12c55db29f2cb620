"""PiggyBack's machine-learning code, run by RQ workers.

This package never imports Django. Every entry point takes file paths and plain
parameters, plus optional callbacks:

* ``report(progress: float, stage: str, metrics: dict | None = None)`` - progress in 0..1,
  a short human stage text ("Epoch 2/8 - step 40/120"), optional metrics dict.
* ``should_cancel() -> bool`` - polled between steps; when it returns True the function
  raises :class:`Cancelled` after saving what it can (e.g. a checkpoint).

Items (one question each) are plain dicts::

    {"id": <any>, "image": "<path relative to image_root>", "question": str,
     "answers": [10 normalised answer strings] or [],   # [] for unlabelled test data
     "answer_type": "yes/no" | "number" | "other" | "",
     "question_type": "what color is the"}               # first words of the question
"""
from gpu_worker.errors import AppError


class Cancelled(Exception):
    """Raised when ``should_cancel()`` asked a long job to stop."""


# The name the ML code has always raised: the one application error (message, field, HTTP status 400 by default).
UserFacingError = AppError


def _noop_report(progress, stage, metrics=None):
    return None


def _never_cancel():
    return False
