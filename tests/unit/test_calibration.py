"""gpu_worker.calibration (issue 11.4): ECE on hand-computed cases, the fits recover a known
miscalibration from synthetic data, and a trained model stores and applies its temperature."""
import json
import os

import numpy as np
import pytest

from gpu_worker.calibration import (
    apply_platt,
    apply_to_predictions,
    calibrate,
    expected_calibration_error,
    fit_binary_temperature,
    fit_platt,
    fit_temperature,
    fit_top_temperature,
    reliability_bins,
)


# ---- ECE by hand ------------------------------------------------------------------------------------
def test_ece_perfectly_calibrated_and_fully_wrong():
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0
    assert expected_calibration_error([1.0, 1.0], [0, 0]) == 1.0
    # bin (0.4667, 0.5333]: conf 0.5, accuracy 0.5
    assert expected_calibration_error([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == pytest.approx(0.0)


def test_ece_hand_computed_two_bins():
    # 15 bins of width 1/15. 0.9 and 0.95 fall in bin 14 ((0.9333, 1]) and bin 13 ((0.8667, 0.9333]).
    # bin 13: {0.9, 0.9} correct {1, 0} -> |0.5 - 0.9| = 0.4, weight 2/5
    # bin 14: {0.95, 0.95, 1.0} correct {1, 1, 1} -> |1 - 0.9667| = 0.0333, weight 3/5
    conf = [0.9, 0.9, 0.95, 0.95, 1.0]
    correct = [1, 0, 1, 1, 1]
    want = 2 / 5 * 0.4 + 3 / 5 * abs(1 - (0.95 + 0.95 + 1.0) / 3)
    assert expected_calibration_error(conf, correct) == pytest.approx(want)


def test_ece_bin_edges_are_right_closed_and_zero_is_in_the_first_bin():
    # 1/15 belongs to bin 0 (right-closed), together with 0.0; 0.07 > 1/15 is in bin 1
    assert expected_calibration_error([0.0, 1 / 15], [0, 0]) == pytest.approx((0 + 1 / 15) / 2)
    bins = reliability_bins([0.0, 1 / 15, 0.07], [0, 0, 1])
    assert [b["count"] for b in bins[:2]] == [2, 1] and len(bins) == 15
    assert bins[1]["accuracy"] == 1.0 and bins[1]["confidence"] == 0.07 and bins[5]["accuracy"] is None


def test_ece_with_vqa_scores_and_bad_input():
    # correctness may be the VQA accuracy (0, 1/3, 2/3, 1): one bin, mean 0.5 vs confidence 0.8
    assert expected_calibration_error([0.8, 0.8], [1 / 3, 2 / 3]) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        expected_calibration_error([], [])
    with pytest.raises(ValueError):
        expected_calibration_error([1.2], [1])
    with pytest.raises(ValueError):
        expected_calibration_error([0.5, 0.5], [1])


# ---- the fits recover a known miscalibration --------------------------------------------------------
def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_recovered_from_synthetic_logits(true_t):
    rng = np.random.default_rng(0)
    n, c = 6000, 10
    calibrated = rng.normal(0, 2.0, size=(n, c))
    labels = np.array([rng.choice(c, p=p) for p in _softmax(calibrated)])
    shown = calibrated * true_t          # over- (T > 1) or under-confident (T < 1) logits
    t = fit_temperature(shown, labels)
    assert t == pytest.approx(true_t, rel=0.08)
    log_probs = shown - np.log(np.exp(shown).sum(axis=1, keepdims=True))
    correct_top = (shown.argmax(axis=1) == labels).astype(float)
    assert fit_top_temperature(log_probs, correct_top) == pytest.approx(true_t, rel=0.1)
    conf = lambda z: _softmax(z).max(axis=1)  # noqa: E731
    correct = _softmax(shown).argmax(axis=1) == labels
    before = expected_calibration_error(conf(shown), correct)
    after = expected_calibration_error(conf(shown / t), correct)
    assert after < 0.03 < before


def test_binary_temperature_and_platt_recover_their_parameters():
    rng = np.random.default_rng(1)
    z = rng.normal(0.5, 2.0, size=8000)
    correct = rng.random(8000) < 1 / (1 + np.exp(-z))
    assert fit_binary_temperature(z * 3.0, correct) == pytest.approx(3.0, rel=0.08)
    log_p = -rng.exponential(1.5, size=8000)
    truth = rng.random(8000) < 1 / (1 + np.exp(-(0.7 * log_p + 1.2)))
    a, b = fit_platt(log_p, truth)
    assert a == pytest.approx(0.7, abs=0.1) and b == pytest.approx(1.2, abs=0.15)
    assert apply_platt(1.0, a, b) == pytest.approx(1 / (1 + np.exp(-b)))


def test_calibrate_cross_fits_and_refuses_tiny_sets():
    rng = np.random.default_rng(2)
    n = 3000
    z = rng.normal(1.0, 2.0, size=n)
    correct = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    preds = [{"answer": "a", "confidence": float(1 / (1 + np.exp(-3 * v))), "top_k": []} for v in z]
    cal = calibrate("sigmoid", preds, correct, groups=[i // 3 for i in range(n)])
    assert cal["method"] == "temperature" and cal["temperature"] == pytest.approx(3.0, rel=0.1)
    assert cal["ece_after"] < 0.04 < 0.1 < cal["ece_before"] and cal["n"] == n
    assert calibrate("sigmoid", preds[:5], correct[:5]) is None
    gen = calibrate("generate", preds, correct)
    assert gen["method"] == "platt" and gen["a"] > 0


def test_platt_applies_to_generative_predictions_only():
    preds = [{"answer": "x", "confidence": 0.5, "top_k": [{"answer": "x", "score": 0.5}, {"answer": "y", "score": 0.2}]}]
    same = apply_to_predictions([dict(p) for p in preds], {"method": "temperature", "temperature": 2.0})
    assert same[0]["confidence"] == 0.5
    out = apply_to_predictions(preds, {"method": "platt", "a": 1.0, "b": 0.0})
    assert out[0]["confidence"] == pytest.approx(1 / 3, abs=1e-6)   # sigmoid(log 0.5) = 0.5 / 1.5
    assert out[0]["top_k"][1]["score"] == pytest.approx(0.2 / 1.2, abs=1e-6)


# ---- stored with the model, applied at prediction ---------------------------------------------------
def test_trained_model_stores_and_applies_its_temperature(easy_items_8, tiny_params, tmp_path):
    from gpu_worker.predict import load_model, predict_batch
    from gpu_worker.train import train_model

    items, root = easy_items_8
    out = str(tmp_path)
    result = train_model("baseline-rnn", items, root, out, dict(tiny_params, val_fraction=0.5), device="cpu")
    cal = result["calibration"]
    assert cal and cal["method"] == "temperature" and cal["temperature"] > 0
    with open(os.path.join(out, "model", "piggyback.json"), encoding="utf-8") as fh:
        assert json.load(fh)["calibration"] == cal
    adapter = load_model(os.path.join(out, "model"), device="cpu")
    assert adapter.calibration == cal and adapter.temperature == cal["temperature"]
    scaled = predict_batch(adapter, items[:10], root, top_k=3, explain=False)
    adapter.calibration = {}
    raw = predict_batch(adapter, items[:10], root, top_k=3, explain=False)
    assert [p["answer"] for p in scaled] == [p["answer"] for p in raw]
    if abs(cal["temperature"] - 1) > 0.05:
        assert [p["confidence"] for p in scaled] != [p["confidence"] for p in raw]
