"""Small upload files for the dataset tests (API, pages and the cleaning job)."""
from __future__ import annotations

import io
import json
import zipfile

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

FORMULA = '=HYPERLINK("http://evil.example","click")'


def png(color=(200, 0, 0), size=(16, 16), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def zip_bytes(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def csv_bytes(rows, header=("image", "question", "answer")) -> bytes:
    import csv

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def upload(name: str, data: bytes, content_type="application/octet-stream") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def clean_files():
    """3 images, 3 labelled rows: everything passes (green)."""
    images = zip_bytes({"shapes/a.png": png((255, 0, 0)), "shapes/b.png": png((0, 255, 0)),
                        "shapes/c.jpg": png((0, 0, 255), fmt="JPEG")})
    questions = csv_bytes([("a.png", "What color is the shape?", "red"),
                           ("b.png", "What color is the shape?", "green|green|dark green"),
                           ("c.jpg", "Is there a circle?", "yes")])
    return upload("shapes.zip", images, "application/zip"), upload("questions.csv", questions, "text/csv")


def mixed_files():
    """Rows 2-5 kept; 6 image missing (formula question), 7 duplicate, 8 broken image, 9 empty question."""
    images = zip_bytes({"a.png": png((255, 0, 0)), "b.png": png((0, 255, 0)), "c.png": png((0, 0, 255)),
                        "d.png": png((9, 9, 9)), "broken.png": b"this is not an image"})
    questions = csv_bytes([
        ("a.png", "What color is the shape?", "red"),
        ("b.png", "What color is the shape?", "green"),
        ("c.png", "Is there a circle?", "yes"),
        ("d.png", "How many shapes are there?", "2"),
        ("missing.png", FORMULA, "x"),
        ("a.png", "What color is the shape?", "red"),
        ("broken.png", "What is it?", "x"),
        ("c.png", "", "x"),
    ])
    return upload("mixed.zip", images, "application/zip"), upload("mixed.csv", questions, "text/csv")


def vqa2_files():
    images = zip_bytes({"val/COCO_val2014_000000000001.png": png((255, 0, 0)),
                        "val/COCO_val2014_000000000002.png": png((0, 0, 255))})
    questions = {"questions": [{"image_id": 1, "question": "What color is it?", "question_id": 11},
                               {"image_id": 2, "question": "Is it blue?", "question_id": 21}]}
    annotations = {"annotations": [
        {"question_id": 11, "image_id": 1, "answer_type": "other", "question_type": "what color is",
         "answers": [{"answer": "red"}] * 9 + [{"answer": "Red."}]},
        {"question_id": 21, "image_id": 2, "answer_type": "yes/no", "answers": [{"answer": "yes"}] * 10}]}
    return (upload("coco.zip", images, "application/zip"),
            upload("v2_questions.json", json.dumps(questions).encode(), "application/json"),
            upload("v2_annotations.json", json.dumps(annotations).encode(), "application/json"))


def jsonl_files():
    images = zip_bytes({"x.png": png((1, 2, 3)), "y.png": png((3, 2, 1))})
    lines = [{"image": "x.png", "question": "What is shown?", "answers": ["a square", "square"]},
             {"image": "y.png", "question": "How many circles?", "answer": "3"}]
    body = "\n".join(json.dumps(o) for o in lines).encode()
    return upload("xy.zip", images, "application/zip"), upload("rows.jsonl", body, "application/jsonl")


def hostile_zip_files():
    """A ZIP whose only 'images' are a path traversal and a junk file: nothing usable."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../etc/evil.png", png())
        zf.writestr("/abs/evil2.png", png())
        zf.writestr("junk.png", b"\x00" * 64)
    questions = csv_bytes([("evil.png", "What?", "x")])
    return upload("evil.zip", buf.getvalue(), "application/zip"), upload("q.csv", questions, "text/csv")
