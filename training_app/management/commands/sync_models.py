"""Seed / update the model registry table from gpu_worker's registry (run by `manage.py up`)."""
from django.core.management.base import BaseCommand

from training_app.registry_sync import sync_models


class Command(BaseCommand):
    help = ("Create or update a PretrainedModel row per gpu_worker registry entry and recompute availability "
            "(offline). Admin choices (enabled, source) are kept.")

    def handle(self, *args, **options):
        out = sync_models()
        from training_app.models import PretrainedModel

        if options.get("verbosity", 1) < 1:
            return

        for row in PretrainedModel.objects.order_by("family", "key"):
            mark = "available" if row.available else "NOT available"
            flag = "" if row.enabled else " (disabled by an admin)"
            self.stdout.write(f"{row.key:20s} {mark}{flag}: {row.availability_reason}")
        self.stdout.write(self.style.SUCCESS(
            f"{len(out['created'])} created, {len(out['updated'])} updated, {len(out['available'])} available."))
