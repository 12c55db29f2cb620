"""The start-fine-tuning form: model, preset, and every hyper-parameter (empty = the model's default)."""
from __future__ import annotations

from django import forms

from gpu_worker.models.registry import GEN_LIMITS, PARAM_LIMITS
from training_app import services

GEN_FIELDS = tuple(GEN_LIMITS)


def _limits():
    out = dict(PARAM_LIMITS)
    out.update(GEN_LIMITS)
    return out


class StartTrainingForm(forms.Form):
    model = forms.ChoiceField(required=False, label="Choose a model")
    preset = forms.ChoiceField(choices=[(k, v) for k, v in services.PRESET_LABELS.items()], initial="balanced",
                               widget=forms.RadioSelect)
    name = forms.CharField(required=False, max_length=120, label="Run name (optional)")

    def __init__(self, *args, models=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.models = list(models)
        from gpu_worker.models.registry import DEFAULT_MODEL_KEY

        self.fields["model"].choices = [("", "— Choose a model —")] + [
            (m.key, f"{m.name} (default)" if m.key == DEFAULT_MODEL_KEY else m.name) for m in self.models]
        for name, lim in _limits().items():
            label, help_text = services.PARAM_LABELS.get(name, (name.replace("_", " ").capitalize(), ""))
            if lim["type"] == "bool":
                # A hidden "false" precedes the checkbox, so an unticked box is sent explicitly.
                self.fields[name] = forms.CharField(required=False, label=label, help_text=help_text,
                                                    widget=forms.CheckboxInput(attrs={"value": "true"}))
                continue
            attrs = {"min": lim["min"], "max": lim["max"], "step": "1" if lim["type"] == "int" else "any",
                     "class": "form-control form-control-sm", "data-param": name}
            self.fields[name] = forms.CharField(required=False, label=label, help_text=help_text,
                                                widget=forms.NumberInput(attrs=attrs))
        self.param_names = [n for n in _limits()]

    def param_fields(self):
        return [self[n] for n in self.param_names if n not in GEN_FIELDS and _limits()[n]["type"] != "bool"]

    def gen_fields(self):
        return [self[n] for n in GEN_FIELDS]

    def params(self) -> dict:
        """The hyper-parameters the user typed (strings; the service validates and coerces them)."""
        out = {}
        for name in self.param_names:
            if _limits()[name]["type"] == "bool":
                values = self.data.getlist(name) if hasattr(self.data, "getlist") else [self.data.get(name)]
                values = [v for v in values if v not in (None, "")]
                if values:
                    out[name] = values[-1]
                continue
            value = (self.data.get(name) or "").strip()
            if value:
                out[name] = value
        return out
