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
