"""clean_dataset: each rule, with every removal reported (nothing disappears silently)."""
import csv
import io
import json
import os
import zipfile

import pytest
from PIL import Image

from gpu_worker import Cancelled, UserFacingError
from gpu_worker.cleaning import CleanResult, clean_dataset, fill_answers
from gpu_worker.safezip import Limits
from gpu_worker.sample_data import build_sample_zip, easy_vqa_files
from gpu_worker.tabular import write_csv


def png(w=16, h=16, color=(200, 0, 0)):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


def make_upload(tmp_path, rows, images, header=("image", "question", "answer"), name="q.csv"):
    zp = tmp_path / "images.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for arc, data in images.items():
            zf.writestr(arc, data)
    qp = tmp_path / name
    with open(qp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return qp, zp


def by_row(result):
    return {d["row"]: d for d in result.dropped}


def test_happy_path_items_and_counts(tmp_path):
    qp, zp = make_upload(tmp_path, [("a.png", "What color is the shape?", "Red"),
                                    ("b.png", "How many circles?", "two")],
                         {"a.png": png(), "b.png": png(color=(0, 0, 200))})
    r = clean_dataset(qp, zp, tmp_path / "out")
    assert isinstance(r, CleanResult) and r.level == "success" and r.dropped == [] and r.warnings == []
    a, b = r.items
    assert a["answers"] == ["red"] * 10 and a["original_answers"] == ["Red"]
    assert a["answer_type"] == "other" and a["question_type"] == "what color is the"
    assert b["answers"] == ["2"] * 10 and b["answer_type"] == "number"
    assert (a["row"], a["image_width"], a["image_height"], a["image_original_name"]) == (2, 16, 16, "a.png")
    assert os.path.isfile(os.path.join(r.image_root, a["image"])) and a["image"] != "a.png"
    assert r.image_root == str(tmp_path / "out" / "images")
    assert r.counts == {"rows_in": 2, "rows_kept": 2, "rows_dropped": 0, "images_in": 2, "images_kept": 2,
                        "images_dropped": 0, "images_oversized": 0, "images_unused": 0, "files_ignored": 0,
                        "dropped_by_reason": {}, "images_dropped_by_reason": {}}
    json.dumps(r.to_dict())  # plain data only


def test_fill_answers_cycles_and_keeps_empty():
    assert fill_answers(["a", "b", "c"]) == ["a", "b", "c"] * 3 + ["a"]
    assert fill_answers([]) == []
    assert len(fill_answers(["x"] * 10)) == 10


def test_answers_optional_test_set(tmp_path):
    qp, zp = make_upload(tmp_path, [("a.png", "what is this?")], {"a.png": png()}, header=("image", "question"))
    r = clean_dataset(qp, zp, tmp_path / "out")
    assert r.items[0]["answers"] == [] and r.items[0]["answer_type"] == ""
    assert r.items[0]["question_type"] == "what is this"


def test_more_than_ten_answers_are_cut_with_warning(tmp_path):
    qp, zp = make_upload(tmp_path, [("a.png", "q?", "|".join(str(i) for i in range(12)))], {"a.png": png()})
    r = clean_dataset(qp, zp, tmp_path / "out")
    assert r.items[0]["answers"] == [str(i) for i in range(10)]
    assert len(r.items[0]["original_answers"]) == 12
    assert any("more than 10 answers" in w for w in r.warnings) and r.level == "warning"


def test_each_row_rule_is_reported(tmp_path):
    images = {"imgs/a.png": png(), "imgs/b.png": png(color=(0, 200, 0)), "other/b.png": png(color=(0, 0, 9)),
              "big.png": png(40, 10), "broken.png": b"not an image"}
    rows = [("a.png", "What is it?", "x"),          # 2 ok (basename)
            ("imgs/a", "What is it? ", "y"),        # 3 duplicate of row 2 (path without ext, spaces)
            ("a", "", "x"),                         # 4 empty question
            ("", "where?", "x"),                    # 5 no image name
            ("missing.png", "q?", "x"),             # 6 not in zip
            ("b.png", "q?", "x"),                   # 7 ambiguous basename
            ("other/b.png", "q?", "x"),             # 8 ok (full path)
            ("big.png", "q?", "x"),                 # 9 oversized image
            ("broken.png", "q?", "x"),              # 10 unreadable image
            ("IMGS/A.PNG", "Another?", "")]         # 11 ok (case-insensitive)
    qp, zp = make_upload(tmp_path, rows, images)
    r = clean_dataset(qp, zp, tmp_path / "out", max_side=32)
    d = by_row(r)
    assert {k: v["reason_code"] for k, v in d.items()} == {
        3: "duplicate", 4: "empty_question", 5: "missing_image_name", 6: "image_not_found",
        7: "image_ambiguous", 9: "image_oversized", 10: "not_an_image"}
    assert "duplicate of row 2" in d[3]["reason"]
    assert "imgs/b.png" in d[7]["reason"] and "other/b.png" in d[7]["reason"]
    assert "40x10" in d[9]["reason"] and d[9]["image"] == "big.png"
    assert [it["row"] for it in r.items] == [2, 8, 11]
    assert r.items[2]["answers"] == []
    assert {x["image"]: x["reason_code"] for x in r.dropped_images} == {"big.png": "image_oversized",
                                                                        "broken.png": "not_an_image"}
    c = r.counts
    assert (c["rows_in"], c["rows_kept"], c["rows_dropped"]) == (10, 3, 7)
    assert (c["images_in"], c["images_kept"], c["images_dropped"], c["images_oversized"]) == (5, 3, 2, 1)
    assert c["images_unused"] == 1  # imgs/b.png: only referred to ambiguously
    assert sum(c["dropped_by_reason"].values()) == c["rows_dropped"]
    assert r.level == "warning"


def test_formula_question_kept_as_text_and_neutralised_on_export(tmp_path):
    qp, zp = make_upload(tmp_path, [("a.png", "=HYPERLINK(\"http://evil\",\"x\")", "-1")], {"a.png": png()})
    r = clean_dataset(qp, zp, tmp_path / "out")
    item = r.items[0]
    assert item["question"] == "=HYPERLINK(\"http://evil\",\"x\")" and item["original_answers"] == ["-1"]
    out = tmp_path / "export.csv"
    write_csv(out, r.items, ["question", "original_answers"])
    text = out.read_text(encoding="utf-8-sig")
    assert "'=HYPERLINK" in text


def test_image_names_with_zip_folder_and_numeric_ids(tmp_path):
    images = {"dataset/images/COCO_val2014_000000000009.jpg": png(), "dataset/images/25.png": png(color=1)}
    qs = {"questions": [{"image_id": 9, "question": "What?", "question_id": 1},
                        {"image_id": 25, "question": "Which?", "question_id": 2},
                        {"image_id": 77, "question": "Gone?", "question_id": 3}]}
    anns = {"annotations": [{"question_id": 1, "image_id": 9, "answers": [{"answer": "Dog"}] * 10,
                             "answer_type": "other", "question_type": "what"}]}
    zp = tmp_path / "i.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for k, v in images.items():
            zf.writestr(k, v)
    (tmp_path / "q.json").write_text(json.dumps(qs))
    (tmp_path / "a.json").write_text(json.dumps(anns))
    r = clean_dataset(tmp_path / "q.json", zp, tmp_path / "out", tmp_path / "a.json")
    assert r.source_format == "vqa2"
    assert [(it["id"], it["image_original_name"], it["answers"][:1], it["question_type"]) for it in r.items] == [
        ("1", "dataset/images/COCO_val2014_000000000009.jpg", ["dog"], "what"),
        ("2", "dataset/images/25.png", [], "which")]
    assert by_row(r)[3]["reason_code"] == "image_not_found"


def test_hostile_members_show_up_as_dropped_images(tmp_path):
    qp, zp = make_upload(tmp_path, [("a.png", "q?", "x")], {"a.png": png(), "../../evil.png": png()})
    r = clean_dataset(qp, zp, tmp_path / "out")
    assert r.dropped_images == [{"image": "../../evil.png", "reason_code": "path_traversal",
                                 "reason": "'../../evil.png' points outside the archive ('..' in its path)"}]
    assert not (tmp_path / "evil.png").exists()


def test_no_usable_rows_or_images_is_fatal(tmp_path):
    qp, zp = make_upload(tmp_path, [("x.png", "q?", "a"), ("y.png", "q?", "a")], {"a.png": png()})
    with pytest.raises(UserFacingError, match=r"None of the 2 questions.*image not found.*Row 2"):
        clean_dataset(qp, zp, tmp_path / "out")
    qp, zp = make_upload(tmp_path, [("a.png", "q?", "a")], {"a.png": b"junk", "readme.txt": b"hi"})
    with pytest.raises(UserFacingError, match="no usable images"):
        clean_dataset(qp, zp, tmp_path / "out2")
    qp, zp = make_upload(tmp_path, [], {"a.png": png()})
    with pytest.raises(UserFacingError, match="no question rows"):
        clean_dataset(qp, zp, tmp_path / "out3")


def test_wrong_questions_file_fails_before_unpacking(tmp_path):
    qp, zp = make_upload(tmp_path, [("a.png", "q?")], {"a.png": png()}, header=("picture", "question"))
    with pytest.raises(UserFacingError, match="no image column"):
        clean_dataset(qp, zp, tmp_path / "out")
    assert not (tmp_path / "out" / "images").exists()


def test_limits_are_honoured_and_max_side_overrides(tmp_path):
    qp, zp = make_upload(tmp_path, [(f"{i}.png", "q?", "a") for i in range(5)],
                         {f"{i}.png": png(color=(i, 0, 0)) for i in range(5)})
    with pytest.raises(UserFacingError, match="entries"):
        clean_dataset(qp, zp, tmp_path / "out", limits=Limits(max_members=3))
    r = clean_dataset(qp, zp, tmp_path / "out2", limits=Limits(max_side=4), max_side=16)
    assert r.counts["rows_kept"] == 5


def test_progress_and_cancel(tmp_path):
    rows = [(f"{i % 3}.png", f"q{i}?", "a") for i in range(2500)]
    qp, zp = make_upload(tmp_path, rows, {f"{i}.png": png(color=(i, 0, 0)) for i in range(3)})
    seen = []
    clean_dataset(qp, zp, tmp_path / "out", report=lambda p, s: seen.append((p, s)))
    ps = [p for p, _ in seen]
    assert ps == sorted(ps) and ps[0] == 0.0 and ps[-1] == 1.0
    assert any("rows read" in s for _, s in seen) and "3 images" in seen[-1][1]
    calls = {"n": 0}

    def cancel_later():
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Cancelled):
        clean_dataset(qp, zp, tmp_path / "out2", should_cancel=cancel_later)


def test_sample_zip_round_trip(tmp_path):
    info = build_sample_zip(tmp_path / "sample.zip", max_images=12, seed=3)
    again = build_sample_zip(tmp_path / "again.zip", max_images=12, seed=3)
    with zipfile.ZipFile(info["zip"]) as a, zipfile.ZipFile(again["zip"]) as b:
        assert a.namelist() == b.namelist() and len(a.namelist()) == 12
    with open(info["csv"], encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh))
    assert header == ["image", "question", "answer"]
    r = clean_dataset(info["csv"], info["zip"], tmp_path / "out")
    assert r.level == "success" and r.counts["images_kept"] == 12
    assert r.counts["rows_kept"] == info["questions"] > 12
    assert all(len(it["answers"]) == 10 for it in r.items)


def test_easy_vqa_files_subset(tmp_path):
    info = easy_vqa_files("test", tmp_path, max_images=5)
    assert info["images"] == 5 and info["zip"].endswith("easy-vqa-test.zip")
    r = clean_dataset(info["csv"], info["zip"], tmp_path / "out")
    assert r.counts["rows_kept"] == info["questions"]
