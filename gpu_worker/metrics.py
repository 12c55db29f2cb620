"""Official VQA accuracy (vqaEval.py, 2021) and the evaluation summary the platform shows.

Per question (``vqa_score``):
1. newlines/tabs -> spaces, strip (answers and prediction);
2. ONLY when the answers are not all identical: processPunctuation + processDigitArticle on the
   answers and on the prediction (so "Yes" scores 0 against ten identical "yes");
3. score = mean over the leave-one-out subsets of min(1, matches among the others / 3).

Fewer than ten answers (user datasets): the same leave-one-out rule over the n given answers, with
the "3 annotators" threshold capped at n - 1 (identical to the official rule for n >= 4; for n = 2 or 3
an answer must match all other annotators to score 1 per subset). A single answer is an exact match
test. Unlabelled items (no answers) are skipped by :func:`evaluate`.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Sequence

from gpu_worker.vqa_normalize import answer_type as _answer_type
from gpu_worker.vqa_normalize import clean_whitespace, normalize_answer, process_digit_article, process_punctuation
from gpu_worker.vqa_normalize import question_type as _question_type

__all__ = ["vqa_score", "exact_match", "evaluate", "majority_answer", "Tally"]


def _prepare(prediction: str, answers: Sequence[str]) -> tuple[str, list[str]]:
    gts = [clean_whitespace(a) for a in answers]
    pred = clean_whitespace(prediction if prediction is not None else "")
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        pred = process_digit_article(process_punctuation(pred))
    return pred, gts


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """Official VQA accuracy of one prediction against the annotators' answers (0..1)."""
    answers = list(answers or [])
    if not answers:
        raise ValueError("vqa_score needs at least one ground-truth answer")
    pred, gts = _prepare(prediction, answers)
    n = len(gts)
    if n == 1:
        return 1.0 if pred == gts[0] else 0.0
    threshold = min(3, n - 1)
    total = 0.0
    matches_all = sum(1 for g in gts if g == pred)
    for g in gts:
        # matches among the other n-1 answers (leave this one out)
        others = matches_all - (1 if g == pred else 0)
        total += min(1.0, others / threshold)
    return total / n


def majority_answer(answers: Sequence[str]) -> str:
    """Most common normalised answer (first reached in order on ties); "" for no answers."""
    normed = [normalize_answer(a) for a in answers if clean_whitespace(a)]
    if not normed:
        return ""
    counts = Counter(normed)
    best = max(counts.values())
    return next(a for a in normed if counts[a] == best)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals the normalised majority answer."""
    return 1.0 if normalize_answer(prediction or "") == majority_answer(answers) else 0.0


def _pct(total: float, count: int) -> float:
    return round(100.0 * total / count, 2) if count else 0.0


class Tally:
    """:func:`evaluate`, one question at a time: ``add(prediction, item)`` for each, then ``summary()``. Holds
    only the sums and the confusion counts, so a job can score questions it no longer keeps."""

    def __init__(self, top_confusions: int = 20):
        self.top_confusions = top_confusions
        self.acc_sum = self.em_sum = 0.0
        self.count = self.skipped = 0
        self.by_atype: dict[str, list] = defaultdict(lambda: [0.0, 0])
        self.by_qtype: dict[str, list] = defaultdict(lambda: [0.0, 0])
        self.confusions: Counter = Counter()

    def add(self, pred: str, item: dict) -> float | None:
        """Count one question; returns its VQA score (None when it has no answers, and is skipped)."""
        answers = [a for a in (item.get("answers") or []) if a is not None]
        if not answers:
            self.skipped += 1
            return None
        s = vqa_score(pred, answers)
        em = exact_match(pred, answers)
        self.acc_sum += s
        self.em_sum += em
        self.count += 1
        atype = item.get("answer_type") or _answer_type(answers)
        qtype = item.get("question_type") or _question_type(item.get("question", ""))
        self.by_atype[atype][0] += s
        self.by_atype[atype][1] += 1
        self.by_qtype[qtype][0] += s
        self.by_qtype[qtype][1] += 1
        if not em:
            self.confusions[(majority_answer(answers), normalize_answer(pred or ""))] += 1
        return s

    def summary(self) -> dict:
        return {
            "vqa_accuracy": _pct(self.acc_sum, self.count),
            "exact_match": _pct(self.em_sum, self.count),
            "per_answer_type": {t: _pct(v[0], v[1]) for t, v in sorted(self.by_atype.items())},
            "per_question_type": {t: _pct(v[0], v[1]) for t, v in sorted(self.by_qtype.items())},
            "count": self.count,
            "skipped_unlabelled": self.skipped,
            "confusions": [{"expected": e, "predicted": p, "count": c}
                           for (e, p), c in sorted(self.confusions.items(), key=lambda kv: (-kv[1], kv[0]))
                           [:self.top_confusions]],
        }


def evaluate(predictions: list[str], items: list[dict], top_confusions: int = 20) -> dict:
    """Summary over the labelled items: percentages rounded to 2 decimals like the official script.

    Returns {"vqa_accuracy", "exact_match", "per_answer_type": {t: %}, "per_question_type": {t: %},
    "count", "skipped_unlabelled", "confusions": [{"expected", "predicted", "count"}] (top 20)}.
    """
    if len(predictions) != len(items):
        raise ValueError(f"evaluate: {len(predictions)} predictions for {len(items)} items")
    tally = Tally(top_confusions)
    for pred, item in zip(predictions, items):
        tally.add(pred, item)
    return tally.summary()
