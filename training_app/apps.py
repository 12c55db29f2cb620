from django.apps import AppConfig


class TrainingAppConfig(AppConfig):
    name = "training_app"
    verbose_name = "Models and fine-tuning"

    def ready(self):
        from django.db.models.signals import post_migrate

        post_migrate.connect(sync_registry_after_migrate, sender=self, dispatch_uid="pb-sync-models")


def sync_registry_after_migrate(sender, using="default", plan=None, **kwargs):
    """`manage.py migrate` leaves the model registry in step with the code (idempotent; admin edits kept), so
    a deployment that only migrates (docker-compose) offers models. `manage.py sync_models` does the same."""
    from django.db import DEFAULT_DB_ALIAS, connections

    from training_app.registry_sync import sync_models

    if using != DEFAULT_DB_ALIAS or "training_app_pretrainedmodel" not in connections[using].introspection.table_names():
        return  # another database, or migrated backwards past the table
    sync_models()
