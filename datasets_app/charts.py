"""Exploration statistics of a cleaned dataset, computed once by the cleaning job (saved in Dataset.stats).

The counting is done with pandas; everything returned is plain data ready for Chart.js: ``{"labels": [...], "values": [...]}`` per chart.
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


def _ranked(values, top: int | None = None) -> list[tuple[str, int]]:
    """(value, count) by count, ties in order of first appearance (like Counter.most_common)."""
    counts = values.value_counts(sort=False).sort_values(ascending=False, kind="stable")
    if top is not None:
        counts = counts.head(top)
    return [(str(k), int(v)) for k, v in counts.items()]


def compute_stats(items: list[dict]) -> dict:
    """Top-30 answers, question length histogram, answer-type split and top question types (pandas)."""
    import pandas as pd  # here, not at import: web processes load this module but never compute stats

    frame = pd.DataFrame({
        "question": pd.Series([it["question"] for it in items], dtype=object),
        "answers": pd.Series([it.get("answers") or [] for it in items], dtype=object),
        "answer_type": pd.Series([it.get("answer_type") or "" for it in items], dtype=object),
        "question_type": pd.Series([it.get("question_type") or "(none)" for it in items], dtype=object),
        "image": pd.Series([it.get("image") for it in items], dtype=object),
    })
    n = len(frame)
    words = frame["question"].map(lambda q: len(q.split())).astype(int)
    labelled_mask = frame["answers"].map(len).astype(int) > 0
    labelled = int(labelled_mask.sum())
    top_answers = _ranked(frame.loc[labelled_mask, "answers"].map(main_answer), TOP_ANSWERS)
    distinct_answers = int(frame.loc[labelled_mask, "answers"].map(main_answer).nunique())
    top_share = sum(c for _, c in top_answers) / labelled if labelled else 0.0
    lengths = words.clip(upper=LENGTH_BINS).value_counts()
    max_len = int(lengths.index.max()) if n else 0
    bins = range(1, max_len + 1)
    hist_labels = [f"{k}+" if k == LENGTH_BINS else str(k) for k in bins]
    atypes = frame["answer_type"].where(frame["answer_type"] != "", "other").where(labelled_mask, "(no answer)")
    order = {"yes/no": 0, "number": 1, "other": 2, "(no answer)": 3}
    type_items = sorted(_ranked(atypes), key=lambda kv: (order.get(kv[0], 9), kv[0]))
    top_q = _ranked(frame["question_type"], TOP_QUESTION_TYPES)
    return {
        "questions": n,
        "images": int(frame["image"].nunique(dropna=False)),
        "labelled": labelled,
        "distinct_answers": distinct_answers,
        "mean_question_words": round(float(words.sum()) / n, 2) if n else 0.0,
        "top_answers_share": round(top_share, 4),
        "top_answers": {"labels": [a for a, _ in top_answers], "values": [c for _, c in top_answers]},
        "question_length": {"labels": hist_labels, "values": [int(lengths.get(k, 0)) for k in bins]},
        "answer_types": {"labels": [k for k, _ in type_items], "values": [v for _, v in type_items]},
        "question_types": {"labels": [k for k, _ in top_q], "values": [v for _, v in top_q]},
    }
