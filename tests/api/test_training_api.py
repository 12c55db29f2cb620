"""/api/v1/models/ and /api/v1/training-runs/: start → train → status → export, permissions, errors, registry."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import pytest
from django.core.management import call_command

from tests.jobs.test_training_job import TINY, dataset, models_synced  # noqa: F401

pytestmark = pytest.mark.django_db


def _start(client, dataset, **body):
    return client.post("/api/v1/training-runs/", {"dataset": dataset.pk, "model": "baseline-rnn", **body}, format="json")


def test_models_list_shows_availability_and_hides_disabled(client_for, owner, models_synced):
    from training_app.models import PretrainedModel

    PretrainedModel.objects.filter(key="baseline-bow").update(enabled=False)
    r = client_for(owner).get("/api/v1/models/")
    assert r.status_code == 200
    rows = {m["key"]: m for m in r.json()}
    assert "baseline-bow" not in rows
    base = rows["baseline-rnn"]
    assert base["available"] is True and base["family"] == "baseline" and base["task"] == "classify"
    assert base["default_params"]["epochs"] >= 1 and base["zero_shot"] is False
    assert rows["blip"]["available"] is False and rows["blip"]["task"] == "generate" and rows["blip"]["availability_reason"]
    assert client_for(None).get("/api/v1/models/").status_code in (401, 403)


def test_sync_keeps_admin_edits_and_import_checkpoint(models_synced, tmp_path, client_for, owner):
    from gpu_worker.models.tiny import make_tiny_checkpoint
    from training_app.models import PretrainedModel

    PretrainedModel.objects.filter(key="baseline-rnn").update(enabled=False, default_params={"epochs": 99})
    PretrainedModel.objects.filter(key="vilt").update(source=str(tmp_path / "missing"))
    out = io.StringIO()
    call_command("sync_models", stdout=out)
    rnn = PretrainedModel.objects.get(key="baseline-rnn")
    assert rnn.enabled is False and rnn.default_params["epochs"] != 99  # admin flag kept, code defaults restored
    vilt = PretrainedModel.objects.get(key="vilt")
    assert vilt.source.endswith("missing") and vilt.available is False and "does not exist" in vilt.availability_reason
    assert "baseline-rnn" in out.getvalue()

    folder = make_tiny_checkpoint("vilt", str(tmp_path / "tiny-vilt"))
    call_command("import_checkpoint", folder, "--key", "tiny-vilt", "--name", "Tiny ViLT", stdout=io.StringIO())
    row = PretrainedModel.objects.get(key="tiny-vilt")
    assert row.available and row.family == "vilt" and row.registry_key in ("vilt", "vilt-vqa") and row.source == folder
    keys = [m["key"] for m in client_for(owner).get("/api/v1/models/").json()]
    assert "tiny-vilt" in keys
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_checkpoint", str(tmp_path / "nope"), "--key", "x", stdout=io.StringIO())


def test_train_through_api_then_export_loads_in_fresh_process(client_for, owner, dataset, run_jobs, tmp_path,
                                                               django_capture_on_commit_callbacks, make_user):
    c = client_for(owner)
    with django_capture_on_commit_callbacks(execute=True):
        r = _start(c, dataset, epochs=2, batch_size=8, val_fraction=0.2, patience=0)  # flat hyper-parameters
    assert r.status_code == 202, r.content
    body = r.json()
    assert body["status"] == "queued" and body["params"]["epochs"] == 2 and body["model"] == "baseline-rnn"
    run_id = body["id"]
    run_jobs(("gpu",))
    r = c.get(f"/api/v1/training-runs/{run_id}/")
    d = r.json()
    assert d["status"] == "succeeded", d["error"]
    assert d["progress"] == 1.0 and d["stage"] == "Done" and d["traceback"] == ""
    assert d["vqa_accuracy"] is not None and d["metrics"]["vqa_accuracy"] == d["vqa_accuracy"]
    assert len(d["metrics"]["epochs"]) == 2 and d["metrics"]["loss_curve"]
    assert d["urls"]["evaluation"] == f"/evaluate/runs/{run_id}/" and "finished" in d["log"]
    assert [x["id"] for x in c.get(f"/api/v1/training-runs/?project={dataset.project_id}").json()["results"]] == [run_id]

    r = c.get(f"/api/v1/training-runs/{run_id}/export/")
    assert r.status_code == 200 and r["Content-Disposition"].startswith("attachment")
    data = b"".join(r.streaming_content)
    zf = zipfile.ZipFile(io.BytesIO(data))
    names = set(zf.namelist())
    assert {"model/config.json", "model/model.safetensors", "metrics.json", "train.log"} <= names
    assert json.loads(zf.read("metrics.json"))["vqa_accuracy"] == d["vqa_accuracy"]
    zf.extractall(tmp_path / "export")
    script = (
        "import sys, json\n"
        "import gpu_worker.models.baseline as b\n"
        "from transformers import AutoConfig, AutoModel\n"
        "folder = sys.argv[1]\n"
        "m = b.PiggyBaselineForVQA.from_pretrained(folder)\n"
        "a = AutoModel.from_pretrained(folder)\n"
        "cfg = AutoConfig.from_pretrained(folder)\n"
        "print(json.dumps({'cls': type(a).__name__, 'labels': len(cfg.id2label),"
        " 'params': sum(p.numel() for p in m.parameters())}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "export" / "model")], capture_output=True,
                          text=True, timeout=120, cwd=str(__import__("django.conf").conf.settings.BASE_DIR))
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["cls"] == "PiggyBaselineForVQA" and info["labels"] == d["metrics"]["num_answers"] and info["params"] > 0

    # Another user sees none of it.
    mallory = client_for(make_user("mallory2"))
    assert mallory.get(f"/api/v1/training-runs/{run_id}/").status_code == 404
    assert mallory.get(f"/api/v1/training-runs/{run_id}/export/").status_code == 404
    assert mallory.post(f"/api/v1/training-runs/{run_id}/rerun/").status_code == 404
    assert mallory.get("/api/v1/training-runs/").json()["results"] == []
    assert mallory.get(f"/api/v1/training-runs/?project={dataset.project_id}").json()["results"] == []
    assert _start(mallory, dataset).status_code == 404  # the dataset itself is invisible


def test_roles_errors_and_actions(client_for, owner, members, dataset, make_user, run_jobs,
                                  django_capture_on_commit_callbacks):
    viewer, editor = client_for(members["viewer"]), client_for(members["editor"])
    r = _start(viewer, dataset, params=TINY)
    assert r.status_code == 403 and "editor" in r.json()["detail"]
    r = _start(editor, dataset, params={"epochs": 0, "batch_size": "big"})
    assert r.status_code == 400
    errs = r.json()["errors"]
    assert "between 1 and 100" in errs["epochs"] and "number" in errs["batch_size"]
    r = editor.post("/api/v1/training-runs/", {"dataset": dataset.pk, "model": ""}, format="json")
    assert r.status_code == 400
    r = editor.post("/api/v1/training-runs/", {"dataset": dataset.pk, "model": "blip"}, format="json")
    assert r.status_code == 400 and "not available" in r.json()["errors"]["model"]

    with django_capture_on_commit_callbacks(execute=True):
        r = _start(editor, dataset, preset="quick", params=TINY)
    assert r.status_code == 202 and r.json()["preset"] == "quick"
    run_id = r.json()["id"]
    # Viewer reads but cannot act.
    assert viewer.get(f"/api/v1/training-runs/{run_id}/").status_code == 200
    assert viewer.post(f"/api/v1/training-runs/{run_id}/cancel/").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        r = editor.post(f"/api/v1/training-runs/{run_id}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert editor.post(f"/api/v1/training-runs/{run_id}/cancel/").status_code == 409
    assert editor.get(f"/api/v1/training-runs/{run_id}/export/").status_code == 409
    with django_capture_on_commit_callbacks(execute=True):
        r = editor.post(f"/api/v1/training-runs/{run_id}/resume/")
    assert r.status_code == 202 and r.json()["status"] == "queued" and r.json()["attempts"] == 2
    assert editor.post(f"/api/v1/training-runs/{run_id}/resume/").status_code == 409
    run_jobs(("gpu",))
    assert editor.get(f"/api/v1/training-runs/{run_id}/").json()["status"] == "succeeded"
    with django_capture_on_commit_callbacks(execute=True):
        r = editor.post(f"/api/v1/training-runs/{run_id}/rerun/")
    assert r.status_code == 202 and r.json()["id"] != run_id and r.json()["rerun_of"] == run_id


def test_traceback_only_for_staff(client_for, owner, dataset, make_user):
    from piggyback.project_services import add_member
    from training_app import services

    run = services.start_run(owner, dataset, "baseline-rnn", params=TINY)
    run.mark_failed("Readable message", "Traceback (most recent call last): boom")
    staff = make_user("staffer", is_staff=True)
    add_member(dataset.project, staff.username, "viewer")
    assert client_for(owner).get(f"/api/v1/training-runs/{run.pk}/").json()["traceback"] == ""
    d = client_for(staff).get(f"/api/v1/training-runs/{run.pk}/").json()
    assert d["error"] == "Readable message" and d["traceback"].startswith("Traceback")


def test_openapi_schema_lists_training_endpoints(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    for p in ["/api/v1/models/", "/api/v1/training-runs/", "/api/v1/training-runs/{id}/",
              "/api/v1/training-runs/{id}/cancel/", "/api/v1/training-runs/{id}/resume/",
              "/api/v1/training-runs/{id}/rerun/", "/api/v1/training-runs/{id}/export/"]:
        assert p in paths, p
    assert "post" in paths["/api/v1/training-runs/"]
    assert any(x["name"] == "project" for x in paths["/api/v1/training-runs/"]["get"]["parameters"])
