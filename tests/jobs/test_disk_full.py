"""Disk full on export: a tiny quota (a 64 KiB tmpfs, or RLIMIT_FSIZE where mounting is not allowed).

The export answers 507 with a readable message, leaves no truncated ZIP in storage and no temp file,
touches nothing already stored, and works again once space is back.
"""
from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
import zipfile

import pytest
from django.core.files.storage import default_storage

from tests.evaluation_helpers import baseline_model, make_run, run, trained_baseline_dir  # noqa: F401

pytestmark = pytest.mark.django_db


@contextlib.contextmanager
def tiny_quota(path):
    """Yield a folder where writing more than ~64 KiB fails like a full disk."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)],
                                 capture_output=True).returncode == 0
    except OSError:  # no mount command
        mounted = False
    if mounted:
        try:
            yield path
        finally:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        yield path
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def test_export_on_full_disk_is_readable_and_retryable(client_for, owner, run, settings, tmp_path):  # noqa: F811
    from training_app.services import export_name

    api = client_for(owner)
    model_files = sorted(default_storage.listdir(f"{run.output_dir}/model")[1])
    quota = tmp_path / "quota"
    with tiny_quota(quota):
        settings.WORKER_CACHE_DIR = quota
        r = api.get(f"/api/v1/training-runs/{run.pk}/export/")
        leftovers = list((quota / "exports").glob("*")) if (quota / "exports").exists() else []
    assert r.status_code == 507, r.content
    assert "not enough disk space" in r.json()["detail"] and "model itself is safe" in r.json()["detail"]
    assert not default_storage.exists(export_name(run))
    assert leftovers == []
    assert sorted(default_storage.listdir(f"{run.output_dir}/model")[1]) == model_files
    run.refresh_from_db()
    assert run.status == "succeeded"
    # Space is back: the same download works and is a complete ZIP.
    settings.WORKER_CACHE_DIR = tmp_path / "cache"
    r = api.get(f"/api/v1/training-runs/{run.pk}/export/")
    assert r.status_code == 200
    data = b"".join(r.streaming_content)
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert "model/config.json" in zf.namelist() and zf.testzip() is None
