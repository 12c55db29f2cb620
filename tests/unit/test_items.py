"""gpu_worker.items: ItemColumns reads back exactly the dicts it was given, in order, and SlimItem reads like its
dict; both hold less."""
import sys

import pytest

from gpu_worker.items import ItemColumns, SlimItem


def test_columns_read_back_as_the_dicts_in_order():
    rows = [{"image": f"{i % 3}.jpg", "question": f"q{i}", "answers": ("a",) * 10, "row": i + 2} for i in range(7)]
    cols = ItemColumns(["image", "question", "answers", "row"])
    for r in rows:
        cols.append_values(r["image"], r["question"], r["answers"], r["row"])
    assert len(cols) == 7 and list(cols) == rows and cols[3] == rows[3] and cols[-1] == rows[-1]
    assert cols[2:5] == rows[2:5] and cols.column("row") == [r["row"] for r in rows]
    assert cols[0] is not cols[0]   # a fresh dict per read: changing it cannot change the store
    with pytest.raises(IndexError):
        cols[7]
    with pytest.raises(ValueError, match="expected 4 values"):
        cols.append_values("x.jpg", "q")
    assert not ItemColumns(["image"]) and len(ItemColumns(["image"])) == 0


def test_columns_hold_less_than_dicts():
    keys = ["image", "question", "answers", "answer_type", "question_type", "row", "stored", "image_original_name"]
    shared = ("yes",) * 10
    dicts = [dict(zip(keys, ("1.jpg", "q", shared, "yes/no", "is the", i, "s/1.jpg", "1.jpg"))) for i in range(1000)]
    cols = ItemColumns(keys)
    for d in dicts:
        cols.append_values(*d.values())
    dict_bytes = sum(sys.getsizeof(d) for d in dicts) + sys.getsizeof(dicts)
    col_bytes = sum(sys.getsizeof(c) for c in cols._columns)
    assert col_bytes * 3 < dict_bytes


def test_slim_item_reads_like_the_dict_it_replaces_in_less_memory():
    d = {"image": "a.jpg", "question": "What?", "answers": ("red",) * 10, "answer_type": "other",
         "question_type": "what"}
    it = SlimItem(*d.values())
    assert it == d and dict(it) == d and list(it) == list(d) and len(it) == 5
    assert it["image"] == "a.jpg" and it.get("answers") == ("red",) * 10 and it.get("row") is None
    assert "question" in it and "row" not in it
    with pytest.raises(KeyError):
        it["row"]
    with pytest.raises(AttributeError):
        it.row = 3   # slots: no other fields, no per-item __dict__
    assert sys.getsizeof(it) < sys.getsizeof(d) / 2
