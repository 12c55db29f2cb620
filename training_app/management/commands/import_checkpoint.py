"""Register a local model folder (fine-tuned export or hub snapshot) as a selectable model."""
from django.core.management.base import BaseCommand, CommandError

from training_app.registry_sync import CheckpointImportError, import_checkpoint


class Command(BaseCommand):
    help = "Register a local checkpoint folder: import_checkpoint <folder> --key my-model --name 'My model'"

    def add_arguments(self, parser):
        parser.add_argument("folder")
        parser.add_argument("--key", required=True, help="Unique slug for the model, e.g. vilt-hospital")
        parser.add_argument("--name", default="", help="Name shown to users")
        parser.add_argument("--disabled", action="store_true", help="Register it disabled (enable in the admin)")

    def handle(self, *args, folder, key, name, disabled, **options):
        try:
            row = import_checkpoint(folder, key=key, name=name, enabled=not disabled)
        except CheckpointImportError as exc:
            raise CommandError(str(exc)) from None
        state = "available" if row.available else f"NOT available ({row.availability_reason})"
        self.stdout.write(self.style.SUCCESS(f"Registered {row.key} ({row.family}, {row.task}): {state}."))
