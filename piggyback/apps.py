from django.apps import AppConfig


class PiggybackConfig(AppConfig):
    name = "piggyback"
    verbose_name = "PiggyBack platform"
