"""Upload form of the dataset page (the rules live in services.create_dataset)."""
from django import forms


class DatasetUploadForm(forms.Form):
    name = forms.CharField(max_length=120, required=False, label="Dataset name",
                           help_text="Leave empty to use the questions file's name.")
    images = forms.FileField(label="Images (ZIP)", widget=forms.ClearableFileInput(attrs={"accept": ".zip"}))
    questions = forms.FileField(
        label="Questions (CSV, Excel .xlsx, JSON or JSON Lines)",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.tsv,.txt,.xlsx,.json,.jsonl,.ndjson"}))
    annotations = forms.FileField(
        label="VQAv2 annotations (optional)", required=False,
        widget=forms.ClearableFileInput(attrs={"accept": ".json"}),
        help_text="Only for the VQAv2 format when questions and annotations are two files.")
