"""Bootstrap form widgets for forms whose markup PiggyBack does not write itself (allauth's account pages).

``{% pb_widget bound_field %}`` renders the field's own widget (so password inputs never echo their value and
every attribute allauth sets stays) with Bootstrap's class, ``aria-invalid`` and ``aria-describedby`` pointing
at the error and help texts that ``templates/allauth/elements/fields.html`` writes under it.
"""
from django import template
from django.forms import CheckboxInput, RadioSelect, Select, SelectMultiple

register = template.Library()


def widget_class(widget) -> str:
    if isinstance(widget, (CheckboxInput, RadioSelect)):
        return "form-check-input"
    if isinstance(widget, (Select, SelectMultiple)):
        return "form-select"
    return "form-control"


@register.simple_tag
def pb_widget(bound_field):
    widget = bound_field.field.widget
    css = widget_class(widget)
    existing = widget.attrs.get("class", "")
    attrs = {"class": " ".join(c for c in (existing, css, "is-invalid" if bound_field.errors else "") if c)}
    described = []
    if bound_field.errors:
        attrs["aria-invalid"] = "true"
        described.append(f"{bound_field.auto_id}-error")
    if bound_field.help_text:
        described.append(f"{bound_field.auto_id}-help")
    if described:
        attrs["aria-describedby"] = " ".join(described)
    return bound_field.as_widget(attrs=attrs)


@register.filter
def is_checkbox(bound_field) -> bool:
    return isinstance(bound_field.field.widget, CheckboxInput)


@register.filter
def chart_rows(series) -> list[tuple]:
    """``{"labels": [...], "values": [...]}`` (a chart's data in Dataset.stats) as (label, value) rows."""
    if not isinstance(series, dict):
        return []
    return list(zip(series.get("labels") or [], series.get("values") or []))


@register.filter
def chart_summary(series, kind: str = "top") -> str:
    """The key numbers of a chart in one sentence (its caption): ``top`` for ranked bars, ``share`` for a
    doughnut (every slice with its per cent), ``hist`` for a histogram (peak and range)."""
    rows = chart_rows(series)
    if not rows:
        return "No data."
    if kind == "share":
        total = sum(v for _, v in rows) or 1
        return "; ".join(f"{label}: {value:,} ({100 * value / total:.0f} %)" for label, value in rows) + "."
    if kind == "hist":
        peak_label, peak = max(rows, key=lambda r: r[1])
        return (f"Most often {peak_label} ({peak:,} questions); from {rows[0][0]} to {rows[-1][0]}.")
    top = sorted(rows, key=lambda r: -r[1])[:3]
    head = ", ".join(f"{label} ({value:,})" for label, value in top)
    return f"Most frequent: {head}" + (f"; {len(rows)} bars in all." if len(rows) > 3 else ".")
