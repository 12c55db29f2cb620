"""The world the permission matrix runs against, built ONCE per test module (committed rows, deleted at the end).

One project ("P") with a viewer, an editor and an owner; an outsider who owns another project ("Q") and a staff
superuser who is in no project. P holds every kind of object with real stored files:

* ``ds``: a succeeded dataset (4 easy-VQA items, images in storage under the datasets layout, 1 dropped row);
  ``ds_spare`` (succeeded, no runs: the one owners may delete), ``ds_failed`` (retry target), ``ds_queued``
  (cancel target);
* ``run``: a succeeded TrainingRun whose ``model/`` folder is a tiny baseline trained once here;
  ``run_failed`` (resume target), ``run_queued`` (cancel target);
* ``ev``: a succeeded Evaluation with predictions.csv, annotated.zip and two batch predictions with their
  image / boxes overlay / heat-map; ``ev_queued`` (cancel target); ``ev_failed`` (retry target);
* one history Prediction (kind single, with files) per member role;
* a zero-shot PretrainedModel whose ``source`` is the trained folder (so zero-shot predictions really answer).
"""
from __future__ import annotations

import csv
import io
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

PREFIX = "permx_"
ROLES = ("anon", "other", "staff", "viewer", "editor", "owner")
MEMBER_ROLES = ("viewer", "editor", "owner")
TRAIN_PARAMS = {"epochs": 1, "batch_size": 8, "val_fraction": 0.2, "learning_rate": 5e-3, "seed": 0}


@dataclass
class World:
    users: dict = field(default_factory=dict)      # role -> User (anon absent)
    ids: dict = field(default_factory=dict)        # name -> pk, used to format URL templates
    own_prediction: dict = field(default_factory=dict)  # member role -> pk of their history prediction
    project_pk: int = 0

    def fmt(self, template: str, role: str) -> str:
        own = self.own_prediction.get(role, self.own_prediction["owner"])
        return template.format(**self.ids, own_pred=own)


# ------------------------------------------------------------------------------------------ small files
def png_bytes(color=(200, 30, 30), size=(48, 48)) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", size, (255, 255, 255))
    img.paste(color, (8, 8, 30, 30))
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_upload(name="q.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, png_bytes(), content_type="image/png")


def dataset_uploads():
    """(images ZIP, questions CSV) uploads that pass the upload checks."""
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("a.png", png_bytes((255, 0, 0)))
        zf.writestr("b.png", png_bytes((0, 0, 255)))
    cbuf = io.StringIO()
    w = csv.writer(cbuf)
    w.writerow(["image", "question", "answer"])
    w.writerow(["a.png", "What color is the shape?", "red"])
    w.writerow(["b.png", "What color is the shape?", "blue"])
    return (SimpleUploadedFile("shapes.zip", zbuf.getvalue(), content_type="application/zip"),
            SimpleUploadedFile("questions.csv", cbuf.getvalue().encode(), content_type="text/csv"))


def _store_bytes(data: bytes, name: str) -> str:
    from piggyback.files import save_local

    with tempfile.NamedTemporaryFile(delete=False) as tmp:
        tmp.write(data)
    try:
        return save_local(tmp.name, name)
    finally:
        Path(tmp.name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ builders
def train_tiny_baseline(out_dir: Path) -> Path:
    from gpu_worker.easyvqa import load_items
    from gpu_worker.train import train_model

    items, root = load_items("train", max_images=4, seed=1)
    train_model("baseline-rnn", items[:20], root, str(out_dir), TRAIN_PARAMS)
    assert (out_dir / "model" / "config.json").is_file()
    return out_dir / "model"


def _dataset(project, user, name, status, n_items=0):
    from datasets_app.models import Dataset, DatasetItem
    from datasets_app.services import images_prefix
    from gpu_worker.easyvqa import load_items
    from piggyback.files import save_local

    ds = Dataset.objects.create(project=project, name=name, status=status, created_by=user,
                                images_file="", questions_file="", has_answers=True)
    if n_items:
        items, root = load_items("test", max_images=2, seed=3)
        for row, it in enumerate(items[:n_items], start=2):
            stored = save_local(Path(root) / it["image"], f"{images_prefix(ds)}/{row}-{it['image']}")
            DatasetItem.objects.create(dataset=ds, row=row, image=stored, image_original_name=it["image"],
                                       question=it["question"], answers=it["answers"],
                                       answer_type=it["answer_type"], question_type=it["question_type"])
    return ds


def _prediction(project, *, user, kind, run, evaluation=None, row=None, tag=""):
    from evaluation_app.models import Prediction

    base = f"projects/{project.pk}/overlays/{kind}/{PREFIX}{tag}"
    return Prediction.objects.create(
        project=project, kind=kind, user=user, training_run=run, evaluation=evaluation, row=row,
        image=_store_bytes(png_bytes((0, 160, 0)), f"projects/{project.pk}/predictions/images/{PREFIX}{tag}.png"),
        overlay=_store_bytes(png_bytes((0, 0, 0)), f"{base}-boxes.png"),
        heatmap=_store_bytes(png_bytes((250, 200, 0)), f"{base}-heatmap.png"),
        question="What color is the shape?", answer="green", confidence=0.9,
        top_k=[{"answer": "green", "score": 0.9}], regions=[{"box": [1, 1, 20, 20], "score": 0.5}],
        expected_answers=["green"] * 10, answer_type="other", question_type="what color is the", vqa_score=1.0,
        image_original_name=f"{tag}.png")


def build_world(model_dir: Path) -> World:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import MD5PasswordHasher, make_password

    from datasets_app.models import Correction, Dataset, DroppedRow
    from evaluation_app.models import Evaluation
    from piggyback.files import save_tree
    from piggyback.project_services import add_member, create_project
    from training_app.models import PretrainedModel, TrainingRun

    User = get_user_model()
    w = World()
    password = make_password("pw-permx-123", hasher=MD5PasswordHasher())
    for role in ("owner", "viewer", "editor", "other", "newbie"):
        w.users[role] = User.objects.create(username=PREFIX + role, email=f"{PREFIX}{role}@example.com",
                                            password=password)
    w.users["staff"] = User.objects.create(username=PREFIX + "staff", email=f"{PREFIX}staff@example.com",
                                           password=password, is_staff=True, is_superuser=True)
    p = create_project(w.users["owner"], "Permission matrix", "every role x every endpoint")
    q = create_project(w.users["other"], "Someone else's", "")
    for role in ("viewer", "editor"):
        add_member(p, w.users[role].username, role)
    owner = w.users["owner"]

    baseline, created = PretrainedModel.objects.get_or_create(
        key="baseline-rnn", defaults=dict(name="Baseline CNN + GRU", family="baseline", task="classify",
                                          registry_key="baseline-rnn", available=True, can_explain=True))
    if not (baseline.available and baseline.enabled):
        PretrainedModel.objects.filter(pk=baseline.pk).update(available=True, enabled=True)
    zs = PretrainedModel.objects.create(
        key=PREFIX.rstrip("_") + "-zs", name="Matrix zero-shot", family="baseline", task="classify",
        registry_key="baseline-rnn", zero_shot=True, enabled=True, available=True, can_explain=True,
        source=str(model_dir))

    ds = _dataset(p, owner, "easy", "succeeded", n_items=4)
    DroppedRow.objects.create(dataset=ds, row=9, image="gone.png", question="=1+1", reason_code="image_missing",
                              reason="Row 9: image gone.png is not in the ZIP")
    ds_spare = _dataset(p, owner, "spare", "succeeded", n_items=2)
    ds_failed = _dataset(p, owner, "failed", "failed")
    ds_queued = _dataset(p, owner, "queued", "queued")

    run = TrainingRun.objects.create(project=p, dataset=ds, model=baseline, name="Matrix run", status="succeeded",
                                     created_by=owner, vqa_accuracy=50.0, params=dict(TRAIN_PARAMS))
    prefix = f"projects/{p.pk}/runs/{run.pk}"
    save_tree(model_dir.parent, prefix)  # model/, metrics.json, train.log (checkpoints too, harmless)
    run._update(output_dir=prefix)
    run_failed = TrainingRun.objects.create(project=p, dataset=ds, model=baseline, name="Failed", status="failed",
                                            created_by=owner, params=dict(TRAIN_PARAMS),
                                            output_dir=f"projects/{p.pk}/runs/failed")
    run_queued = TrainingRun.objects.create(project=p, dataset=ds, model=baseline, name="Queued", status="queued",
                                            created_by=owner, params=dict(TRAIN_PARAMS))

    ev = Evaluation.objects.create(project=p, training_run=run, name="Matrix evaluation", status="succeeded",
                                   created_by=owner, images_file="", questions_file="", dataset=ds,
                                   metrics={"vqa_accuracy": 50.0, "count": 2})
    ev_dir = f"projects/{p.pk}/evaluations/{ev.pk}"
    _store_bytes(b"row,image,question,answer\n1,a.png,What color?,green\n", f"{ev_dir}/predictions.csv")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("1-what-color.png", png_bytes())
    _store_bytes(zbuf.getvalue(), f"{ev_dir}/annotated.zip")
    ev._update(output_dir=ev_dir)
    batch = [_prediction(p, user=owner, kind="batch", run=run, evaluation=ev, row=i, tag=f"batch{i}")
             for i in (1, 2)]
    ev_queued = Evaluation.objects.create(project=p, training_run=run, name="Queued evaluation", status="queued",
                                          created_by=owner, images_file="", questions_file="")
    ev_failed = Evaluation.objects.create(project=p, training_run=run, name="Failed evaluation", status="failed",
                                          error="The worker stopped.", created_by=owner, images_file="",
                                          questions_file="")
    for role in MEMBER_ROLES:
        w.own_prediction[role] = _prediction(p, user=w.users[role], kind="single", run=run, tag=f"hist-{role}").pk

    # issue 14: version 2 of ``ds`` (a retrain target) and a pending correction (a new version's content)
    ds_v2 = _dataset(p, owner, "easy", "succeeded", n_items=2)
    Dataset.objects.filter(pk=ds_v2.pk).update(version=2, parent=ds, root=ds)
    Correction.objects.create(dataset=ds, prediction=batch[1], image=batch[1].image, question=batch[1].question,
                              answer="purple", created_by=owner)

    m = {mm.user_id: mm.pk for mm in p.memberships.all()}
    w.project_pk = p.pk
    w.ids = dict(
        p=p.pk, q=q.pk, ds=ds.pk, ds_spare=ds_spare.pk, ds_failed=ds_failed.pk, ds_queued=ds_queued.pk,
        item=ds.items.first().pk, run=run.pk, run_failed=run_failed.pk, run_queued=run_queued.pk,
        ds_v2=ds_v2.pk, ev=ev.pk, ev_queued=ev_queued.pk, ev_failed=ev_failed.pk, batch_pred=batch[0].pk, owner_pred=w.own_prediction["owner"],
        zs_key=zs.key, zs=zs.pk, baseline_key=baseline.key, m_viewer=m[w.users["viewer"].pk],
        newbie=w.users["newbie"].username, owner_name=owner.username,
    )
    w.created_baseline = created
    return w


def destroy_world(w: World) -> None:
    """Delete everything build_world committed (rows; stored files live in the test MEDIA_ROOT)."""
    from django.contrib.auth import get_user_model

    from evaluation_app.models import Evaluation, Prediction
    from piggyback.models import Project
    from training_app.models import PretrainedModel, TrainingRun

    projects = Project.objects.filter(owner__username__startswith=PREFIX)
    Prediction.objects.filter(project__in=projects).delete()
    Evaluation.objects.filter(project__in=projects).delete()
    TrainingRun.objects.filter(project__in=projects).delete()
    projects.delete()
    PretrainedModel.objects.filter(key=w.ids.get("zs_key", "")).delete()
    if getattr(w, "created_baseline", False):
        PretrainedModel.objects.filter(key="baseline-rnn", runs__isnull=True, evaluations__isnull=True).delete()
    get_user_model().objects.filter(username__startswith=PREFIX).delete()
