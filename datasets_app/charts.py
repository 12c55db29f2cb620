"""Exploration statistics of a cleaned dataset, computed once by the cleaning job (saved in Dataset.stats).

Counted in one pass (:class:`StatsAccumulator`, which the cleaning job feeds chunk by chunk, so a
440,000-question dataset is never held at once); everything returned is plain data ready for Chart.js: ``{"labels": [...], "values": [...]}`` per chart.
"""
from __future__ import annotations

from collections import Counter

TOP_ANSWERS = 30
TOP_QUESTION_TYPES = 15
LENGTH_BINS = 20  # question length histogram: 1..LENGTH_BINS-1 words, then "LENGTH_BINS+"


def main_answer(answers: list) -> str:
    """The most frequent of the (ten) answers; ties go to the first one given."""
    if not answers:
        return ""
    counts = Counter(answers)
    best = max(counts.values())
    return next(a for a in answers if counts[a] == best)


def _ranked(counts: Counter, top: int | None = None) -> list[tuple[str, int]]:
    """(value, count) by count, ties in order of first appearance (like Counter.most_common)."""
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # stable: first seen first among equals
    if top is not None:
        ranked = ranked[:top]
    return [(str(k), int(v)) for k, v in ranked]


class StatsAccumulator:
    """The statistics of :func:`compute_stats`, fed a chunk of items at a time: memory grows with the
    distinct images, answers and question types, not with the number of questions."""

    def __init__(self):
        self.n = self.labelled = self.words = 0
        self.images: set = set()
        self.main_answers: Counter = Counter()
        self.lengths: Counter = Counter()
        self.answer_types: Counter = Counter()
        self.question_types: Counter = Counter()

    def add(self, items) -> None:
        for it in items:
            self.n += 1
            n_words = len(it["question"].split())
            self.words += n_words
            self.lengths[min(n_words, LENGTH_BINS)] += 1
            answers = it.get("answers") or []
            if answers:
                self.labelled += 1
                self.main_answers[main_answer(answers)] += 1
                self.answer_types[it.get("answer_type") or "other"] += 1
            else:
                self.answer_types["(no answer)"] += 1
            self.question_types[it.get("question_type") or "(none)"] += 1
            self.images.add(it.get("image"))

    def result(self) -> dict:
        n, labelled = self.n, self.labelled
        top_answers = _ranked(self.main_answers, TOP_ANSWERS)
        top_share = sum(c for _, c in top_answers) / labelled if labelled else 0.0
        max_len = max(self.lengths) if n else 0
        bins = range(1, max_len + 1)
        hist_labels = [f"{k}+" if k == LENGTH_BINS else str(k) for k in bins]
        order = {"yes/no": 0, "number": 1, "other": 2, "(no answer)": 3}
        type_items = sorted(_ranked(self.answer_types), key=lambda kv: (order.get(kv[0], 9), kv[0]))
        top_q = _ranked(self.question_types, TOP_QUESTION_TYPES)
        return {
            "questions": n,
            "images": len(self.images),
            "labelled": labelled,
            "distinct_answers": len(self.main_answers),
            "mean_question_words": round(float(self.words) / n, 2) if n else 0.0,
            "top_answers_share": round(top_share, 4),
            "top_answers": {"labels": [a for a, _ in top_answers], "values": [c for _, c in top_answers]},
            "question_length": {"labels": hist_labels, "values": [int(self.lengths.get(k, 0)) for k in bins]},
            "answer_types": {"labels": [k for k, _ in type_items], "values": [v for _, v in type_items]},
            "question_types": {"labels": [k for k, _ in top_q], "values": [v for _, v in top_q]},
        }


def compute_stats(items: list[dict]) -> dict:
    """Top-30 answers, question length histogram, answer-type split and top question types."""
    acc = StatsAccumulator()
    acc.add(items)
    return acc.result()
