"""Upload form of the dataset page (the rules live in services.create_dataset)."""
from django import forms


class DatasetUploadForm(forms.Form):
    name = forms.CharField(max_length=120, required=False, label="Dataset name",
                           help_text="Leave empty to use the questions file's name.")
    images = forms.FileField(label="Images (ZIP)", required=False,
                             widget=forms.ClearableFileInput(attrs={"accept": ".zip"}))
    questions = forms.FileField(
        required=False,
        label="Questions (CSV, Excel .xlsx, JSON or JSON Lines)",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.tsv,.txt,.xlsx,.json,.jsonl,.ndjson"}))
    annotations = forms.FileField(
        label="VQAv2 annotations (optional)", required=False,
        widget=forms.ClearableFileInput(attrs={"accept": ".json"}),
        help_text="Only for the VQAv2 format when questions and annotations are two files.")
    # set by the page's resumable uploader (tus) for large files instead of sending them in the form
    images_upload = forms.CharField(required=False, max_length=300, widget=forms.HiddenInput)
    questions_upload = forms.CharField(required=False, max_length=300, widget=forms.HiddenInput)
    annotations_upload = forms.CharField(required=False, max_length=300, widget=forms.HiddenInput)

    def clean(self):
        data = super().clean()
        for key, label in (("images", "the images ZIP"), ("questions", "the questions file")):
            if not data.get(key) and not data.get(f"{key}_upload"):
                self.add_error(key, f"Choose {label}.")
        return data
