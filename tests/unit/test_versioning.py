"""gpu_worker.versioning: corrections merged into a parent's items with the cleaning rules (no Django)."""
from __future__ import annotations

from gpu_worker.versioning import build_version


def _item(row, image, question, answer):
    return {"image": image, "image_original_name": image.rsplit("/", 1)[-1], "image_width": 8, "image_height": 8,
            "question": question, "answers": [answer] * 10, "original_answers": [answer], "answer_type": "other",
            "question_type": "what color is the", "row": row}


def _ok(name):
    return (True, 16, 12, "") if "missing" not in name else (False, 0, 0, "the image file is not stored any more")


PARENT = [_item(2, "p/a.png", "What color is the shape?", "red"), _item(3, "p/b.png", "What color is the shape?", "blue")]


def test_replace_add_and_drop_with_reasons():
    corrections = [
        {"id": 1, "image": "p/a.png", "question": "what  color is the shape?", "answer": "The Green!"},  # replaces
        {"id": 2, "image": "e/c.png", "question": "How many sides?", "answer": "Three", "prediction": 9},  # adds
        {"id": 3, "image": "e/missing.png", "question": "Is it round?", "answer": "yes"},          # image gone
        {"id": 4, "image": "e/c.png", "question": "   ", "answer": "x"},                             # no question
        {"id": 5, "image": "e/d.png", "question": "What is it?", "answer": "..."},                    # empty answer
    ]
    result = build_version(PARENT, corrections, check_image=_ok)
    by_key = {(it["image"], it["question"]): it for it in result.items}
    assert len(result.items) == 3
    replaced = by_key[("p/a.png", "What color is the shape?")]
    assert replaced["answers"] == ["green"] * 10 and replaced["original_answers"] == ["The Green!"]
    assert replaced["row"] == 2
    added = by_key[("e/c.png", "How many sides?")]
    assert added["answers"] == ["3"] * 10 and added["answer_type"] == "number" and added["row"] == 4
    assert (added["image_width"], added["image_height"]) == (16, 12) and added["question_type"]
    assert by_key[("p/b.png", "What color is the shape?")]["answers"] == ["blue"] * 10
    codes = sorted(d["reason_code"] for d in result.dropped)
    assert codes == ["empty_answer", "empty_question", "image_not_found"]
    assert any("Correction 3" in d["reason"] and "not stored" in d["reason"] for d in result.dropped)
    assert result.counts["replaced"] == 1 and result.counts["added"] == 1 and result.counts["rows_kept"] == 3
    assert result.level == "warning"
    assert PARENT[0]["answers"] == ["red"] * 10  # the parent's items are not changed


def test_latest_correction_wins_and_images_checked_once():
    calls = []

    def check(name):
        calls.append(name)
        return True, 4, 4, ""

    corrections = [{"id": i, "image": "e/x.png", "question": "Which one?", "answer": a}
                   for i, a in enumerate(["left", "right"], start=1)]
    corrections.append({"id": 3, "image": "e/x.png", "question": "Other?", "answer": "no"})
    result = build_version([], corrections, check_image=check)
    assert [it["answers"][0] for it in result.items] == ["right", "no"]
    assert [d["reason_code"] for d in result.dropped] == ["superseded"]
    assert calls == ["e/x.png"]
    assert result.counts["rows_kept"] == 2 and result.level == "warning"


def test_no_corrections_is_a_clean_copy():
    result = build_version(PARENT, [], check_image=_ok)
    assert result.items == PARENT and result.level == "success" and not result.dropped
