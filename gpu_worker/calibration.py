"""Confidence calibration: the expected calibration error, reliability bins, and the two fits.

* :func:`expected_calibration_error` - ECE over 15 equal-width confidence bins (Naeini et al. 2015;
  Guo et al. 2017, eq. 3): ``sum_b |B_b|/n * |accuracy(B_b) - confidence(B_b)|``. "Correct" may be 0/1
  or the VQA accuracy of the answer (0, 1/3, 2/3, 1), so the reading is "the share of the answer that
  is right".
* :func:`fit_temperature` - temperature scaling (Guo et al. 2017): one scalar ``T > 0`` dividing the
  logits, chosen to minimise the negative log-likelihood of the true labels on held-out data. The
  argmax, hence the answer and the accuracy, does not change. Optimised with L-BFGS over ``log T``.
* :func:`fit_top_temperature` - the same single scalar for a softmax head, chosen by the NLL of the
  event the confidence states ("the top answer is right"). The platform fits this one for the baseline:
  on easy-VQA (bench/bench_calibration.py) it leaves a lower ECE on unseen questions than the label NLL,
  whose temperature is kept in ``temperature_label_nll`` for comparison.
* :func:`fit_binary_temperature` - the same scalar for answer heads that score each answer with a
  sigmoid (ViLT, VisualBERT, LXMERT): the reported confidence is ``sigmoid(z_top / T)``, and ``T``
  minimises the binary NLL of that confidence against the answer being right.
* :func:`fit_platt` - Platt scaling (Platt 1999) for generative families: ``sigmoid(a * log p + b)``
  where ``p`` is the answer's sequence probability, fitted to the answer being right (binary NLL).

:func:`calibrate` fits the one that matches a family on validation predictions and reports the ECE
before and after (the "after" is cross-fitted: two halves, each scored with the fit on the other
half, so it is not measured on the data it was fitted on).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = ["N_BINS", "expected_calibration_error", "reliability_bins", "fit_temperature", "fit_top_temperature",
           "fit_binary_temperature", "fit_platt", "apply_platt", "calibrate", "MIN_CALIBRATION_ITEMS"]

N_BINS = 15
MIN_CALIBRATION_ITEMS = 20      # fewer validation questions than this: no fit (identity)
T_RANGE = (0.05, 50.0)


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin b holds confidences in (b/n, (b+1)/n]; 0 goes to the first bin."""
    return np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)


def _arrays(confidences, correct) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidences if isinstance(confidences, np.ndarray) else list(confidences), dtype=np.float64)
    corr = np.asarray(correct if isinstance(correct, np.ndarray) else list(correct), dtype=np.float64)
    if conf.shape != corr.shape:
        raise ValueError("confidences and correct must have the same length")
    if conf.size and (np.any(conf < 0) or np.any(conf > 1) or np.any(np.isnan(conf))):
        raise ValueError("confidences must lie in [0, 1]")
    return conf, corr


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[float], n_bins: int = N_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins over [0, 1]; ``correct`` is 0/1 (or a score in [0, 1])."""
    conf, corr = _arrays(confidences, correct)
    if conf.size == 0:
        raise ValueError("ECE needs at least one prediction")
    idx = _bin_index(conf, n_bins)
    ece = 0.0
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            ece += mask.sum() / conf.size * abs(corr[mask].mean() - conf[mask].mean())
    return float(ece)


def reliability_bins(confidences: Sequence[float], correct: Sequence[float], n_bins: int = N_BINS) -> list[dict]:
    """Per bin: ``{"lo", "hi", "count", "confidence", "accuracy"}`` (mean confidence and mean correctness
    of the bin, None when empty) - the data of a reliability diagram."""
    conf, corr = _arrays(confidences, correct)
    idx = _bin_index(conf, n_bins) if conf.size else np.zeros(0, dtype=int)
    out = []
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        out.append({"lo": round(b / n_bins, 4), "hi": round((b + 1) / n_bins, 4), "count": n,
                    "confidence": round(float(conf[mask].mean()), 4) if n else None,
                    "accuracy": round(float(corr[mask].mean()), 4) if n else None})
    return out


def _lbfgs(params: list[torch.Tensor], loss_fn) -> None:
    opt = torch.optim.LBFGS(params, lr=0.5, max_iter=200, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def _clamp_t(log_t: torch.Tensor) -> float:
    t = float(torch.exp(log_t).item())
    if not math.isfinite(t):
        return T_RANGE[1]
    return min(max(t, T_RANGE[0]), T_RANGE[1])


def fit_temperature(logits, labels) -> float:
    """Temperature ``T`` minimising the NLL of ``labels`` (N,) under ``softmax(logits / T)`` (N, C)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[0] == 0:
        raise ValueError("logits must be (N, C) and labels (N,), N > 0")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    _lbfgs([log_t], lambda: torch.nn.functional.cross_entropy(z / torch.exp(log_t), y))
    return _clamp_t(log_t.detach())


def fit_top_temperature(log_probs, correct) -> float:
    """``T`` minimising the binary NLL of the top answer's ``softmax(log_probs / T)`` probability against
    ``correct`` (0..1): temperature scaling fitted to the event the confidence claims, "this answer is
    right", rather than to the label's multi-class likelihood (:func:`fit_temperature`)."""
    z = torch.as_tensor(np.asarray(log_probs), dtype=torch.float64)
    c = torch.as_tensor(np.asarray(correct), dtype=torch.float64)
    if z.ndim != 2 or c.shape != (z.shape[0],) or z.shape[0] == 0:
        raise ValueError("log_probs must be (N, C) and correct (N,), N > 0")
    top = z.argmax(dim=1, keepdim=True)

    def loss():
        # log p_top and log(1 - p_top) from log-softmax, stable for p_top near 1
        logp = torch.log_softmax(z / torch.exp(log_t), dim=1)
        lp_top = logp.gather(1, top).squeeze(1)
        lp_rest = torch.logsumexp(logp.scatter(1, top, float("-inf")), dim=1)
        return -(c * lp_top + (1 - c) * lp_rest).mean()

    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    _lbfgs([log_t], loss)
    return _clamp_t(log_t.detach())


def _bce(prob_logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(prob_logit, target)


def fit_binary_temperature(top_logits, correct) -> float:
    """``T`` minimising the binary NLL of ``sigmoid(top_logits / T)`` against ``correct`` (0..1)."""
    z = torch.as_tensor(np.asarray(top_logits), dtype=torch.float64)
    c = torch.as_tensor(np.asarray(correct), dtype=torch.float64)
    if z.ndim != 1 or c.shape != z.shape or z.numel() == 0:
        raise ValueError("top_logits and correct must be 1-D of the same non-zero length")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    _lbfgs([log_t], lambda: _bce(z / torch.exp(log_t), c))
    return _clamp_t(log_t.detach())


def fit_platt(log_probs, correct) -> tuple[float, float]:
    """``(a, b)`` of ``sigmoid(a * log_probs + b)`` minimising the binary NLL against ``correct``; ``a``
    is kept positive so a more probable sequence never gets a lower confidence."""
    s = torch.as_tensor(np.asarray(log_probs), dtype=torch.float64)
    c = torch.as_tensor(np.asarray(correct), dtype=torch.float64)
    if s.ndim != 1 or c.shape != s.shape or s.numel() == 0:
        raise ValueError("log_probs and correct must be 1-D of the same non-zero length")
    log_a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    _lbfgs([log_a, b], lambda: _bce(torch.exp(log_a) * s + b, c))
    return float(torch.exp(log_a).item()), float(b.item())


def apply_platt(prob: float, a: float, b: float) -> float:
    """The Platt-scaled confidence of a sequence with probability ``prob``."""
    lp = math.log(min(1.0, max(float(prob), 1e-12)))
    x = a * lp + b
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# ---- a family's confidence as a function of the fitted parameter --------------------------------
def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def softmax_confidence(log_probs: np.ndarray, t: float) -> np.ndarray:
    """Top softmax probability after dividing the (log-probability) logits by ``t``."""
    z = log_probs / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e.max(axis=1) / e.sum(axis=1)


def _fit_and_score(kind: str, data: dict, fit_idx: np.ndarray, score_idx: np.ndarray) -> tuple[dict, np.ndarray]:
    """Fit ``kind`` on ``fit_idx`` rows and return (parameters, scaled confidences of ``score_idx``)."""
    if kind == "softmax":
        t = fit_top_temperature(data["log_probs"][fit_idx], data["correct"][fit_idx])
        return {"method": "temperature", "temperature": t}, softmax_confidence(data["log_probs"][score_idx], t)
    if kind == "sigmoid":
        t = fit_binary_temperature(data["top_logit"][fit_idx], data["correct"][fit_idx])
        return ({"method": "temperature", "temperature": t},
                1.0 / (1.0 + np.exp(-data["top_logit"][score_idx] / t)))
    a, b = fit_platt(data["log_prob"][fit_idx], data["correct"][fit_idx])
    conf = np.array([apply_platt(math.exp(x), a, b) for x in data["log_prob"][score_idx]])
    return {"method": "platt", "a": a, "b": b}, conf


def calibrate(kind: str, predictions: list[dict], correct: Sequence[float], *, labels: Sequence[int] | None = None,
              groups: Sequence[str] | None = None, seed: int = 0) -> dict | None:
    """Fit a family's calibration on validation ``predictions`` (temperature 1 / uncalibrated).

    ``kind``: "softmax" (classifier with a softmax head: each prediction's ``top_k`` must cover the
    answers, the rest of the mass is one "other" class; ``labels`` index the true answer in that list,
    -1 when it is not there), "sigmoid" (classifier scoring answers with sigmoids) or "generate"
    (``confidence`` is the sequence probability). ``groups`` (e.g. image names) keep a group in one half
    of the cross-fit. Returns the parameters plus ``ece_before``, ``ece_after`` (cross-fitted) and
    ``n``, or None with fewer than MIN_CALIBRATION_ITEMS predictions.
    """
    n = len(predictions)
    if n < MIN_CALIBRATION_ITEMS:
        return None
    correct = np.asarray(list(correct), dtype=np.float64)
    conf0 = np.array([float(p["confidence"]) for p in predictions])
    data = {"correct": correct}
    if kind == "softmax":
        data["log_probs"], data["labels"] = _softmax_inputs(predictions, labels)
    elif kind == "sigmoid":
        data["top_logit"] = _logit(conf0)
    elif kind == "generate":
        data["log_prob"] = np.log(np.clip(conf0, 1e-12, 1.0))
    else:
        raise ValueError(f"unknown calibration kind {kind!r}")
    halves = _two_halves(n, groups, seed)
    after = np.empty(n)
    for fit_idx, score_idx in (halves, halves[::-1]):
        _, after[score_idx] = _fit_and_score(kind, data, fit_idx, score_idx)
    params, _ = _fit_and_score(kind, data, np.arange(n), np.arange(n))
    if kind == "softmax":   # Guo et al.'s multi-class NLL fit, kept for comparison (bench_calibration.py)
        params["temperature_label_nll"] = fit_temperature(data["log_probs"], data["labels"])
    return {**params, "kind": kind, "n": n, "n_bins": N_BINS,
            "ece_before": round(expected_calibration_error(conf0, correct), 5),
            "ece_after": round(expected_calibration_error(np.clip(after, 0, 1), correct), 5)}


def _softmax_inputs(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities (N, K + 1): the K listed answers and the remaining mass as one "other" class."""
    k = max(len(p["top_k"]) for p in predictions)
    lp = np.full((len(predictions), k + 1), math.log(1e-12))
    for i, p in enumerate(predictions):
        scores = [max(float(t["score"]), 1e-12) for t in p["top_k"]]
        lp[i, :len(scores)] = np.log(scores)
        lp[i, k] = math.log(max(1.0 - sum(scores), 1e-12))
    y = np.asarray([(lab if lab is not None and lab >= 0 else k) for lab in labels], dtype=np.int64)
    return lp, y


def _two_halves(n: int, groups, seed: int) -> tuple[np.ndarray, np.ndarray]:
    keys = list(groups) if groups is not None else list(range(n))
    uniq = sorted(set(map(str, keys)))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    first = set(uniq[: max(1, len(uniq) // 2)])
    in_first = np.array([str(k) in first for k in keys])
    a, b = np.flatnonzero(in_first), np.flatnonzero(~in_first)
    if len(b) == 0:   # one group only: split the rows
        a, b = np.arange(n)[: n // 2], np.arange(n)[n // 2:]
    return a, b


def apply_to_predictions(predictions: list[dict], calibration: dict | None) -> list[dict]:
    """Platt scaling of generative predictions in place: ``confidence`` and every top-k score. (Classifier
    families apply their temperature inside the model's softmax / sigmoid; nothing to do for them.)"""
    if not calibration or calibration.get("method") != "platt":
        return predictions
    a, b = float(calibration["a"]), float(calibration["b"])
    for p in predictions:
        for t in p.get("top_k") or []:
            t["score"] = round(apply_platt(t["score"], a, b), 6)
        if p.get("top_k"):
            p["confidence"] = p["top_k"][0]["score"]
        elif p.get("confidence") is not None:
            p["confidence"] = round(apply_platt(p["confidence"], a, b), 6)
    return predictions
