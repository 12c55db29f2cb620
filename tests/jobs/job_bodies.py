"""Job bodies used by the job-pattern tests (importable by the RQ worker by dotted path)."""
import time

from gpu_worker import Cancelled, UserFacingError
from piggyback.jobs import background_job


@background_job("datasets_app.Dataset")
def succeed(row, reporter, steps=5):
    for i in range(steps):
        reporter((i + 1) / steps, f"Step {i + 1}/{steps}", force=True)
    row._update(counts={"steps": steps})
    return "ok"


@background_job("datasets_app.Dataset")
def explode(row, reporter):
    reporter(0.3, "Reading the questions file", force=True)
    raise ZeroDivisionError("division by zero in step 3")


@background_job("datasets_app.Dataset")
def user_error(row, reporter):
    raise UserFacingError("Row 7, column “question”: the question is empty. Fill it in and upload again.")


@background_job("datasets_app.Dataset")
def cancellable(row, reporter):
    for _ in range(50):
        if reporter.should_cancel():
            raise Cancelled()
        time.sleep(0.02)
    return "finished"
