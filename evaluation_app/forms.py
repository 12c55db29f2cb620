from __future__ import annotations

from django import forms

from evaluation_app.services import MAX_QUESTION_CHARS
from gpu_worker.models.registry import GEN_LIMITS, TOP_K_LIMITS

_BEAMS, _TOKENS = GEN_LIMITS["num_beams"], GEN_LIMITS["max_new_tokens"]


class _GenerationFields(forms.Form):
    top_k = forms.IntegerField(min_value=TOP_K_LIMITS["min"], max_value=TOP_K_LIMITS["max"],
                               initial=TOP_K_LIMITS["default"], required=False, widget=forms.HiddenInput)
    num_beams = forms.IntegerField(min_value=_BEAMS["min"], max_value=_BEAMS["max"], initial=_BEAMS["default"],
                                   required=False, label="Beams")
    max_new_tokens = forms.IntegerField(min_value=_TOKENS["min"], max_value=_TOKENS["max"],
                                        initial=_TOKENS["default"], required=False, label="Longest answer (tokens)")

    def params(self) -> dict:
        return {k: self.cleaned_data.get(k) for k in ("top_k", "num_beams", "max_new_tokens")
                if self.cleaned_data.get(k) is not None}


class SampleForm(_GenerationFields):
    sample = forms.CharField(max_length=40)
    question = forms.CharField(max_length=MAX_QUESTION_CHARS, required=False)
    own_question = forms.CharField(max_length=MAX_QUESTION_CHARS, required=False, label="…or type your own question")

    def clean(self):
        data = super().clean()
        text = (data.get("own_question") or "").strip() or (data.get("question") or "").strip()
        if not text:
            raise forms.ValidationError("Pick a question from the menu or type one.")
        data["text"] = text
        return data


class SingleForm(_GenerationFields):
    image = forms.FileField(label="Image", widget=forms.ClearableFileInput(attrs={"accept": "image/*"}))
    question = forms.CharField(max_length=MAX_QUESTION_CHARS, label="Question")


class BatchForm(forms.Form):
    images = forms.FileField(label="Images (ZIP)", widget=forms.ClearableFileInput(attrs={"accept": ".zip"}))
    questions = forms.FileField(label="Questions (CSV)",
                                help_text="Same format as for training: image, question and, optionally, answer.",
                                widget=forms.ClearableFileInput(attrs={"accept": ".csv,.tsv,.txt,.json,.jsonl"}))
    name = forms.CharField(max_length=120, required=False, label="Name (optional)")


class DatasetEvalForm(forms.Form):
    """Evaluate on a ready dataset of the project (no upload)."""

    dataset = forms.TypedChoiceField(coerce=int, label="Evaluate on", choices=())
    name = forms.CharField(max_length=120, required=False, label="Name (optional)")

    def __init__(self, *args, datasets=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].choices = [(d.pk, f"{d} · {d.counts.get('rows_kept', 0)} questions") for d in datasets]


class ReviewForm(forms.Form):
    """One step of the review queue: accept the model's answer, or type the right one."""

    prediction = forms.IntegerField(min_value=1, max_value=2**31 - 1, widget=forms.HiddenInput)
    answer = forms.CharField(max_length=300, required=False, label="Right answer")
    action = forms.ChoiceField(choices=[("accept", "Accept"), ("correct", "Correct"), ("skip", "Skip")],
                               required=False)
    dataset = forms.TypedChoiceField(coerce=int, required=False, label="Corrections go into", choices=())

    def __init__(self, *args, datasets=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].choices = [(d.pk, str(d)) for d in datasets]
