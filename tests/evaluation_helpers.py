"""Fixtures shared by the evaluation tests (import them into a test module).

A tiny baseline is trained ONCE per session on ~40 easy-VQA questions; each test copies it into storage
under its own ``projects/<p>/runs/<id>/model/`` and gets a succeeded TrainingRun row pointing there.
"""
from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest

TRAIN_PARAMS = {"epochs": 3, "batch_size": 16, "val_fraction": 0.1, "learning_rate": 5e-3, "seed": 0}


@pytest.fixture(scope="session")
def trained_baseline_dir(tmp_path_factory):
    from gpu_worker.easyvqa import load_items
    from gpu_worker.train import train_model

    items, root = load_items("train", max_images=6, seed=1)
    out = tmp_path_factory.mktemp("baseline-run")
    train_model("baseline-rnn", items[:40], root, str(out), TRAIN_PARAMS)
    assert (out / "model" / "config.json").is_file()
    return out / "model"


@pytest.fixture(scope="session")
def tiny_blip_dir(tmp_path_factory):
    from gpu_worker.models.tiny import make_tiny_checkpoint

    return Path(make_tiny_checkpoint("blip", str(tmp_path_factory.mktemp("tiny-blip"))))


@pytest.fixture
def baseline_model(db):
    from training_app.models import PretrainedModel

    model, _ = PretrainedModel.objects.get_or_create(
        key="baseline-rnn",
        defaults=dict(name="Baseline CNN + GRU", family="baseline", task="classify", registry_key="baseline-rnn",
                      available=True, can_explain=True))
    return model


@pytest.fixture
def blip_model(db, tiny_blip_dir):
    from training_app.models import PretrainedModel

    model, _ = PretrainedModel.objects.update_or_create(
        key="blip",
        defaults=dict(name="BLIP VQA", family="blip", task="generate", registry_key="blip", zero_shot=True,
                      enabled=True, source=str(tiny_blip_dir), available=True, can_explain=True))
    return model


def make_dataset(project, n_images=3, user=None):
    """A succeeded Dataset with a few easy-VQA items whose images are in storage."""
    from datasets_app.models import Dataset, DatasetItem
    from gpu_worker.easyvqa import load_items
    from piggyback.files import save_local

    items, root = load_items("test", max_images=n_images, seed=3)
    ds = Dataset.objects.create(project=project, name="easy", status="succeeded", created_by=user,
                                images_file="x.zip", questions_file="x.csv", has_answers=True)
    for i, it in enumerate(items, start=2):
        name = save_local(Path(root) / it["image"], f"projects/{project.pk}/datasets/{ds.pk}/images/{it['image']}")
        DatasetItem.objects.create(dataset=ds, row=i, image=name, image_original_name=it["image"],
                                   question=it["question"], answers=it["answers"], answer_type=it["answer_type"],
                                   question_type=it["question_type"])
    return ds


@pytest.fixture
def make_run(db, trained_baseline_dir, baseline_model):
    from piggyback.files import save_tree
    from training_app.models import TrainingRun

    def _make(project, *, status="succeeded", user=None):
        ds = make_dataset(project, user=user)
        run = TrainingRun.objects.create(project=project, dataset=ds, model=baseline_model, name="Tiny baseline",
                                         status=status, created_by=user, vqa_accuracy=50.0,
                                         params=dict(TRAIN_PARAMS))
        prefix = f"projects/{project.pk}/runs/{run.pk}"
        save_tree(trained_baseline_dir, f"{prefix}/model")
        run._update(output_dir=prefix)
        return run

    return _make


@pytest.fixture
def run(make_run, project, owner):
    return make_run(project, user=owner)


def png_bytes(color=(200, 30, 30), size=(64, 64), fmt="PNG") -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(img).rectangle([16, 16, 40, 40], fill=color)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def upload(name: str, data: bytes, content_type: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type=content_type)


def batch_files(n_images=4, *, answers=True, extra_rows=(), seed=5):
    """(images ZIP, questions CSV) as uploads from the easy-VQA test split, plus the items used."""
    from gpu_worker.easyvqa import load_items

    items, root = load_items("test", max_images=n_images, seed=seed)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        for name in sorted({it["image"] for it in items}):
            zf.write(Path(root) / name, arcname=name)
    cbuf = io.StringIO()
    w = csv.writer(cbuf)
    w.writerow(["image", "question", "answer"] if answers else ["image", "question"])
    for it in items:
        w.writerow([it["image"], it["question"], it["answers"][0]] if answers else [it["image"], it["question"]])
    for row in extra_rows:
        w.writerow(row)
    return (upload("shapes.zip", zbuf.getvalue(), "application/zip"),
            upload("questions.csv", cbuf.getvalue().encode(), "text/csv"), items)
