"""docker-compose.yml cannot run here (no Docker engine): check its structure by reading it."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_services_healthchecks_and_order():
    d = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = d["services"]
    assert {"postgres", "redis", "migrate", "web", "worker-cpu", "worker-gpu"} <= set(services)
    for name in ("postgres", "redis", "web"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("web", "worker-cpu", "worker-gpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["worker-gpu"]["command"][-1] == "gpu" and services["worker-cpu"]["command"][-1] == "default"
    env = services["web"]["environment"]
    assert env["DJANGO_ENV"] == "production" and "DATABASE_URL" in env and "REDIS_URL" in env


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./run_tests.sh" in readme and "./quickstart.sh" in readme
    assert "run_tests.sh" in (ROOT / ".ci" / "run").read_text()


def test_torch_is_pinned():
    reqs = (ROOT / "requirements.txt").read_text().splitlines()
    assert "torch==2.13.0" in reqs


def test_runtime_and_dev_requirements_are_split():
    runtime = (ROOT / "requirements.txt").read_text()
    dev = (ROOT / "requirements-dev.txt").read_text()
    for tool in ("pytest", "hypothesis", "playwright", "ruff", "accelerate"):
        assert tool not in runtime, f"{tool} is a development tool; it belongs in requirements-dev.txt"
        assert tool in dev
    assert "-r requirements.txt" in dev
    assert "requirements-dev" not in (ROOT / "Dockerfile").read_text()


def test_the_architecture_document_is_in_the_repository_and_nothing_points_outside_it():
    assert (ROOT / "docs" / "ARCHITECTURE.md").is_file()
    offenders = []
    for path in ROOT.rglob("*"):
        if path.suffix not in {".py", ".md", ".html", ".sh", ".yml", ".toml"} or not path.is_file():
            continue
        if any(part in {".venv", "node_modules", ".git", "staticfiles", "var", "test-artifacts"} for part in path.parts):
            continue
        text = path.read_text(errors="ignore")
        for needle in ("../shared/", "ML-NOTES.md", "DESIGN.md"):
            if needle in text and path.name != "test_deploy_files.py":
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders


def _interpolate(value: str, env: dict) -> str:
    """Compose's variable substitution: ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR}, $$."""
    import re

    def sub(m):
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        if op == ":-":
            return env.get(name) or arg
        if op == "-":
            return env[name] if name in env else arg
        if op == ":?":
            assert env.get(name), f"{name} must be set: {arg}"
            return env[name]
        return env.get(name, "")

    return re.sub(r"\$\{(\w+)(:-|-|:\?)?([^}]*)\}", sub, value).replace("$$", "$")


def _storage_of(service_env: dict, var_dir) -> dict:
    """The default STORAGES entry Django's settings build from a service's environment (in a subprocess)."""
    import json
    import subprocess
    import sys

    code = ("import json, django; from django.conf import settings; django.setup(); "
            "o = dict(settings.STORAGES['default']); o['OPTIONS'] = {k: v for k, v in o.get('OPTIONS', {}).items() "
            "if isinstance(v, (str, int, type(None)))}; print(json.dumps(o))")
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "piggyback.settings", **service_env,
           "PIGGYBACK_VAR_DIR": str(var_dir)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_compose_s3_profile_parses_and_wires_web_and_workers_to_the_bucket(tmp_path):
    d = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = d["services"]
    # the object store and its one-shot bucket creation exist only under the "s3" profile
    assert services["minio"]["profiles"] == ["s3"] and services["minio-bucket"]["profiles"] == ["s3"]
    assert [n for n, s in services.items() if "profiles" in s] == ["minio", "minio-bucket"]
    assert "healthcheck" in services["minio"] and "miniodata" in d["volumes"]
    assert services["minio-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    gate = services["migrate"]["depends_on"]["minio-bucket"]
    assert gate == {"condition": "service_completed_successfully", "required": False}  # skipped without the profile

    shell = {"SECRET_KEY": "x" * 50, "STORAGE_BACKEND": "s3"}  # what `STORAGE_BACKEND=s3 docker compose --profile s3 up` sets
    minio_env = {k: _interpolate(str(v), shell) for k, v in services["minio"]["environment"].items()}
    bucket_env = {k: _interpolate(str(v), shell) for k, v in services["minio-bucket"]["environment"].items()}
    command = _interpolate(services["minio-bucket"]["command"][0], shell)
    assert "mc mb --ignore-existing" in command and '"store/$BUCKET"' in command
    for name in ("web", "worker-cpu", "worker-gpu", "migrate", "reconcile"):
        env = {k: _interpolate(str(v), shell) for k, v in services[name]["environment"].items()}
        assert env["STORAGE_BACKEND"] == "s3", name
        # the app's keys are MinIO's root credentials, its bucket is the one minio-bucket creates, at minio's address
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (minio_env["MINIO_ROOT_USER"],
                                                                          minio_env["MINIO_ROOT_PASSWORD"]), name
        assert env["AWS_STORAGE_BUCKET_NAME"] == bucket_env["BUCKET"], name
        assert env["AWS_S3_ENDPOINT_URL"] == "http://minio:9000" and "http://minio:9000" in command, name
    assert len(minio_env["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO refuses shorter secrets

    # Django's settings, built from the web service's environment, point the default storage at that bucket
    web_env = {k: _interpolate(str(v), shell) for k, v in services["web"]["environment"].items()}
    storage = _storage_of(web_env, tmp_path)
    assert storage["BACKEND"] == "storages.backends.s3.S3Storage"
    opts = storage["OPTIONS"]
    assert (opts["bucket_name"], opts["endpoint_url"], opts["region_name"], opts["addressing_style"]) == (
        "piggyback", "http://minio:9000", "us-east-1", "path")
    # Amazon S3 itself: no profile, an empty endpoint, your bucket
    aws = _storage_of({**web_env, "AWS_S3_ENDPOINT_URL": "", "AWS_STORAGE_BUCKET_NAME": "my-bucket"}, tmp_path)["OPTIONS"]
    assert aws["endpoint_url"] is None and aws["addressing_style"] is None and aws["bucket_name"] == "my-bucket"
    # and without STORAGE_BACKEND the stack keeps the shared volume
    local = {k: _interpolate(str(v), {"SECRET_KEY": "x" * 50}) for k, v in services["web"]["environment"].items()}
    assert local["STORAGE_BACKEND"] == "local"
    assert _storage_of(local, tmp_path)["BACKEND"] == "django.core.files.storage.FileSystemStorage"
