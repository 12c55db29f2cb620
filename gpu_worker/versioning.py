"""Build dataset version N+1 from the parent's items and the experts' corrections (no Django here).

The same rules as an upload's cleaning (:mod:`gpu_worker.cleaning`) apply to every correction: an empty
question or answer, an image that is gone or unreadable, a duplicate are dropped with their reason; answers
are normalised like the official VQA evaluation and filled to ten; answer and question types are derived
the same way. A correction for an (image, question) the parent already has replaces that item's answers;
any other correction adds an item after the parent's last row. Image files are referenced, never copied.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Optional

from gpu_worker import Cancelled
from gpu_worker.cleaning import CleanResult, fill_answers
from gpu_worker.vqa_normalize import answer_type, normalize_answer, question_type

__all__ = ["build_version"]


def _key(image: str, question: str) -> tuple[str, str]:
    return image, " ".join((question or "").split()).lower()


def build_version(parent_items: list[dict], corrections: list[dict], *,
                  check_image: Callable[[str], tuple[bool, int, int, str]],
                  should_cancel: Optional[Callable] = None) -> CleanResult:
    """Merge ``corrections`` (oldest first; a later one for the same pair wins) into ``parent_items``.

    ``parent_items``: dicts with image (storage name), image_original_name, image_width, image_height,
    question, answers, original_answers, answer_type, question_type, row.
    ``corrections``: dicts with id, image, image_original_name, question, answer, prediction (id or None).
    ``check_image(name) -> (ok, width, height, reason)`` checks an image new to the dataset.
    Returns a :class:`CleanResult` (items keep storage names in ``image``; ``counts`` has the version's
    numbers: rows_in, rows_kept, corrections, replaced, added, dropped ...)."""
    result = CleanResult(source_format="version")
    items = [dict(it) for it in parent_items]
    index = {_key(it["image"], it["question"]): i for i, it in enumerate(items)}
    next_row = max((int(it.get("row") or 0) for it in items), default=1) + 1
    reasons: Counter = Counter()
    replaced: set = set()
    added = 0
    checked: dict = {}

    def drop(row, c, code, reason):
        reasons[code] += 1
        result.dropped.append({"row": row, "image": c.get("image_original_name") or c.get("image") or "",
                               "question": c.get("question") or "", "reason_code": code, "reason": reason})

    latest = {_key(c.get("image") or "", c.get("question") or ""): n for n, c in enumerate(corrections)}
    for n, c in enumerate(corrections):
        if should_cancel is not None and n % 1000 == 999 and should_cancel():
            raise Cancelled()
        label = f"Correction {c.get('id', n + 1)}" + (f" (prediction {c['prediction']})" if c.get("prediction") else "")
        question = " ".join((c.get("question") or "").split())
        answer = normalize_answer(str(c.get("answer") or ""))
        key = _key(c.get("image") or "", question)
        row = items[index[key]]["row"] if key in index else next_row
        if latest[key] != n:
            drop(row, c, "superseded", f"{label} was replaced by a later correction of the same image and question.")
            continue
        if not question:
            drop(row, c, "empty_question", f"{label} has no question text.")
            continue
        if not answer:
            drop(row, c, "empty_answer", f"{label}: the answer “{c.get('answer', '')}” is empty once normalised.")
            continue
        answers = fill_answers([answer])
        if key in index:
            it = items[index[key]]
            it.update(answers=answers, original_answers=[str(c.get("answer"))], answer_type=answer_type(answers))
            replaced.add(key)
            continue
        if c["image"] not in checked:
            checked[c["image"]] = check_image(c["image"])
        ok, width, height, why = checked[c["image"]]
        if not ok:
            drop(row, c, "image_not_found", f"{label}: its image cannot be used ({why}).")
            continue
        items.append({"image": c["image"], "image_original_name": c.get("image_original_name") or "",
                      "image_width": width, "image_height": height, "question": question, "answers": answers,
                      "original_answers": [str(c.get("answer"))], "answer_type": answer_type(answers),
                      "question_type": question_type(question), "row": next_row})
        index[key] = len(items) - 1
        next_row += 1
        added += 1

    result.items = items
    result.counts = {
        "rows_in": len(parent_items) + len(corrections), "rows_kept": len(items), "rows_dropped": len(result.dropped),
        "parent_rows": len(parent_items), "corrections": len(corrections), "replaced": len(replaced),
        "added": added, "dropped_by_reason": dict(reasons),
        "images_in": len({it["image"] for it in items}), "images_kept": len({it["image"] for it in items}),
        "images_dropped": 0, "files_ignored": 0,
    }
    if result.dropped:
        result.warnings.append(f"{len(result.dropped):,} corrections could not be used; see the cleaning report.")
    result.level = "warning" if result.dropped or result.warnings else "success"
    return result
