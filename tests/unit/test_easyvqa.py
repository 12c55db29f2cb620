"""easy-VQA helpers: item dicts, sample export, and the worker's torch thread policy."""
import csv
import os

import torch

from gpu_worker.easyvqa import answers, export_sample, load_items
from gpu_worker.train import set_torch_threads


def test_load_items_contract():
    items, root = load_items("test", max_images=3, seed=5)
    assert len({it["image"] for it in items}) == 3
    for it in items:
        assert set(it) == {"id", "image", "question", "answers", "answer_type", "question_type"}
        assert len(it["answers"]) == 10 and len(set(it["answers"])) == 1 and it["answers"][0] in answers()
        assert it["answer_type"] == ("yes/no" if it["answers"][0] in ("yes", "no") else "other")
        assert os.path.isfile(os.path.join(root, it["image"]))
    assert load_items("test", max_images=3, seed=5)[0] == items
    assert len(load_items("train", max_items=7)[0]) == 7


def test_export_sample(tmp_path):
    items, img_dir = export_sample(str(tmp_path), "train", max_images=2)
    assert sorted(os.listdir(img_dir)) == sorted({it["image"] for it in items})
    with open(tmp_path / "questions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["question"] for r in rows] == [it["question"] for it in items]
    assert rows[0]["answer"] == items[0]["answers"][0]


def test_thread_policy(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("PIGGYBACK_TORCH_THREADS", "1")
        assert set_torch_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("PIGGYBACK_TORCH_THREADS")
        n = set_torch_threads()
        assert n == max(1, min(16, len(os.sched_getaffinity(0)) - 1))
    finally:
        torch.set_num_threads(before)
