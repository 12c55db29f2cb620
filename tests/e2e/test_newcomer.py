"""The newcomer path in Chromium: quick start -> demo project -> train with the defaults -> ask a sample question
from the holdout set -> a right answer with the strongest region on the shape (bench/bench_newcomer.py drives it).

CI runs the demo at 1,200 images per split to keep the suite short; bench/bench_newcomer.py runs the whole demo
(4,000 + 1,000 images) for the README's figure."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import ARTIFACTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_newcomer_trains_the_demo_with_defaults_and_gets_a_right_answer_on_a_holdout_image():
    from bench.bench_newcomer import newcomer_path

    r = newcomer_path(1200, screenshots=ARTIFACTS)
    assert "Next: open the project “Demo: easy-VQA”" in r["quick_start_log"]
    assert r["preset"] == "balanced"
    assert r["samples_source"].startswith("From the holdout set “easy-VQA test (holdout)”")
    assert r["val_vqa_accuracy"] is not None and r["val_vqa_accuracy"] >= 90, r
    assert r["right"], r
    assert r["regions"] and r["on_shape"] is True, r
