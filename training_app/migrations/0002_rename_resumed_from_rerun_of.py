"""TrainingRun.resumed_from was never a resume: it points at the run a re-run (or "train again") repeats."""
from django.db import migrations, models
import django.db.models.deletion


class Migration(migrations.Migration):

    dependencies = [
        ("training_app", "0001_initial"),
    ]

    operations = [
        migrations.RenameField(model_name="trainingrun", old_name="resumed_from", new_name="rerun_of"),
        migrations.AlterField(
            model_name="trainingrun",
            name="rerun_of",
            field=models.ForeignKey(blank=True, help_text="The run whose model and settings this one repeats (re-run, train again)",
                                    null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                                    to="training_app.trainingrun"),
        ),
    ]
