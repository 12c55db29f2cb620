"""Load the easy-VQA sample into a project through the normal upload service and cleaning job."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from datasets_app import services
from datasets_app.models import Dataset
from piggyback import project_services
from piggyback.models import Project


class Command(BaseCommand):
    help = ("Load the easy-VQA sample dataset (coloured shapes) into a project. The upload goes through "
            "the same checks and cleaning job as a user's upload.")

    def add_arguments(self, parser):
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--project", type=int, help="Project id (its owner becomes the uploader).")
        target.add_argument("--user", help="Username: uses (or creates) that user's project 'easy-VQA demo'.")
        parser.add_argument("--images", type=int, default=services.SAMPLE_IMAGES,
                            help=f"Number of sample images (default {services.SAMPLE_IMAGES}).")
        parser.add_argument("--name", default="easy-VQA sample")
        parser.add_argument("--sync", action="store_true",
                            help="Run the cleaning here (an RQ SimpleWorker burst) instead of waiting for a worker.")

    def handle(self, *args, **opts):
        if opts["project"] is not None:
            project = Project.objects.filter(pk=opts["project"]).select_related("owner").first()
            if project is None:
                raise CommandError(f"There is no project {opts['project']}.")
            user = project.owner
        else:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"There is no user '{opts['user']}'. Create it first (manage.py createsuperuser).")
            project = Project.objects.filter(owner=user, name="easy-VQA demo").first() or \
                project_services.create_project(user, "easy-VQA demo", "Coloured shapes: the sample dataset.")
        if opts["images"] < 1:
            raise CommandError("--images must be at least 1.")
        dataset = services.create_sample_dataset(user, project, max_images=opts["images"], name=opts["name"])
        self.stdout.write(f"Dataset {dataset.pk} “{dataset.name}” queued in project {project.pk} “{project.name}”.")
        if opts["sync"]:
            import django_rq
            from rq import SimpleWorker

            queue = django_rq.get_queue("default")
            SimpleWorker([queue], connection=queue.connection).work(burst=True, with_scheduler=False)
        dataset = Dataset.objects.get(pk=dataset.pk)
        if dataset.status == "succeeded":
            c = dataset.counts
            self.stdout.write(self.style.SUCCESS(
                f"Your dataset is ready: {c['images_kept']:,} images, {c['rows_kept']:,} questions."))
        elif dataset.status == "failed":
            raise CommandError(f"The cleaning failed: {dataset.error}")
        else:
            self.stdout.write(f"Status: {dataset.status}. A worker (manage.py rqworker default) will clean it.")
