"""Query parameters of the API, validated by django-filter before they reach a query.

A parameter that is not what its schema says (``?project=abc``, an id beyond 64 bits, text with a NUL byte)
answers 400 with the field's message instead of reaching PostgreSQL. The schema (drf-spectacular's django-filter
extension) documents each parameter with the same type and range the filter enforces.
"""
from __future__ import annotations

import django_filters as df
from django import forms
from django.db.models import Q
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError

MAX_ID = 2**63 - 1  # BigAutoField
MAX_TEXT = 200


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class IdFilter(df.NumberFilter):
    """A primary key: a whole number from 1 to 2**63-1 (``NumberFilter`` would take decimals)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


@extend_schema_field({"type": "string", "maxLength": MAX_TEXT})
class TextFilter(df.CharFilter):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", MAX_TEXT)
        super().__init__(*args, **kwargs)


class ProjectFilter(df.FilterSet):
    project = IdFilter(field_name="project_id", help_text="Only this project.")


def search_predictions(qs, text: str):
    text = (text or "").strip()
    return qs.filter(Q(question__icontains=text) | Q(answer__icontains=text)) if text else qs


class PredictionFilter(df.FilterSet):
    q = TextFilter(method="_search", help_text="Text in the question or the answer.")
    wrong = df.BooleanFilter(method="_wrong", help_text="true: only answers that scored below 1.")

    def _search(self, qs, name, value):
        return search_predictions(qs, value)

    def _wrong(self, qs, name, value):
        return qs.filter(vqa_score__lt=1) if value else qs


class HistoryFilter(PredictionFilter):
    project = IdFilter(field_name="project_id", help_text="Only this project.")
    training_run = IdFilter(field_name="training_run_id", help_text="Only this fine-tuned run.")
    model = TextFilter(field_name="model__key", help_text="Only this zero-shot model (its key).")


class ItemFilter(df.FilterSet):
    """Parameters of a dataset's item search (the search itself is ``datasets_app.services.search_items``)."""

    search = TextFilter(help_text="Text in the question, an answer or the image name.")
    answer_type = df.ChoiceFilter(choices=[(t, t) for t in ("yes/no", "number", "other")],
                                  help_text="yes/no, number or other.")
    question_type = TextFilter(help_text="First words of the question, e.g. 'what color is the'.")


def _valid(filterset_class, request, queryset):
    fs = filterset_class(request.query_params, queryset=queryset, request=request)
    if not fs.is_valid():
        raise ValidationError({k: " ".join(v) for k, v in fs.errors.items()})
    return fs


def apply(filterset_class, request, queryset):
    """Filter ``queryset`` by the request's query parameters; 400 with per-parameter messages when invalid."""
    return _valid(filterset_class, request, queryset).qs


def cleaned(filterset_class, request, queryset) -> dict:
    """The request's query parameters, validated by ``filterset_class`` (400 when invalid)."""
    return _valid(filterset_class, request, queryset).form.cleaned_data


def id_param(value) -> int | None:
    """A primary key from a query string or form value (1 .. 2**63-1, ASCII digits only), else None.

    ``str.isdigit`` is not enough: it accepts "²" and other digits ``int()`` refuses, and any length."""
    text = str(value or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


def IdField(**kwargs):  # noqa: N802 - reads like the serializer field it is
    """A request-body primary key: 1 .. 2**63-1, so an overflowing number is a 400, never a database error."""
    from rest_framework import serializers

    return serializers.IntegerField(min_value=1, max_value=MAX_ID, **kwargs)
