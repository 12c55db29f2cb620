import time

from django.core.management.base import BaseCommand

from piggyback.jobs import fresh_connection, reconcile


class Command(BaseCommand):
    help = "Fail background rows whose worker vanished (stale heartbeat or lost RQ job)."

    def add_arguments(self, parser):
        parser.add_argument("--loop", type=int, default=0, help="Repeat every N seconds (0 = once).")

    def handle(self, *args, loop=0, **options):
        while True:
            fresh_connection()
            for line in reconcile():
                self.stdout.write(line)
            if not loop:
                return
            time.sleep(loop)
