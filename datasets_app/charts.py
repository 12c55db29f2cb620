"""Exploration statistics of a cleaned dataset, computed once by the cleaning job (saved in Dataset.stats).

Everything here is plain data ready for Chart.js: ``{"labels": [...], "values": [...]}`` per chart.
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


def compute_stats(items: list[dict]) -> dict:
    """Top-30 answers, question length histogram, answer-type split and top question types."""
    answers: Counter = Counter()
    lengths: Counter = Counter()
    atypes: Counter = Counter()
    qtypes: Counter = Counter()
    images = set()
    total_words = 0
    labelled = 0
    for it in items:
        words = len(it["question"].split())
        total_words += words
        lengths[min(words, LENGTH_BINS)] += 1
        if it.get("answers"):
            labelled += 1
            answers[main_answer(it["answers"])] += 1
            atypes[it.get("answer_type") or "other"] += 1
        else:
            atypes["(no answer)"] += 1
        qtypes[it.get("question_type") or "(none)"] += 1
        images.add(it.get("image"))
    n = len(items)
    top_answers = answers.most_common(TOP_ANSWERS)
    top_share = sum(c for _, c in top_answers) / labelled if labelled else 0.0
    max_len = max(lengths) if lengths else 0
    hist_labels = [f"{k}+" if k == LENGTH_BINS else str(k) for k in range(1, max_len + 1)]
    order = {"yes/no": 0, "number": 1, "other": 2, "(no answer)": 3}
    type_items = sorted(atypes.items(), key=lambda kv: (order.get(kv[0], 9), kv[0]))
    top_q = qtypes.most_common(TOP_QUESTION_TYPES)
    return {
        "questions": n,
        "images": len(images),
        "labelled": labelled,
        "distinct_answers": len(answers),
        "mean_question_words": round(total_words / n, 2) if n else 0.0,
        "top_answers_share": round(top_share, 4),
        "top_answers": {"labels": [a for a, _ in top_answers], "values": [c for _, c in top_answers]},
        "question_length": {"labels": hist_labels, "values": [lengths.get(k, 0) for k in range(1, max_len + 1)]},
        "answer_types": {"labels": [k for k, _ in type_items], "values": [v for _, v in type_items]},
        "question_types": {"labels": [k for k, _ in top_q], "values": [v for _, v in top_q]},
    }
