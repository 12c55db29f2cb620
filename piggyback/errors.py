"""The one error path: an :class:`~gpu_worker.errors.AppError` (or a Django ``ValidationError``) raised anywhere
below a view becomes the same response everywhere.

* REST API: :func:`exception_handler` (``REST_FRAMEWORK["EXCEPTION_HANDLER"]``) answers ``exc.status`` with
  ``{"detail", "code", "field"?, "errors"?}``; everything else goes through DRF's own handler (401 with
  ``WWW-Authenticate``, 403, 404, 405, 415, 429 ...).
* Pages: :func:`add_to_form` shows the error on the form that caused it (the page answers 400);
  :class:`AppErrorMiddleware` renders any AppError a page did not handle as an error page with its status.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import render
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from gpu_worker.errors import AppError, InvalidInput


def as_app_error(exc: Exception) -> AppError | None:
    """The AppError an exception stands for, or None when it is not a user-facing error."""
    if isinstance(exc, AppError):
        return exc
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            errors = {field: " ".join(msgs) for field, msgs in exc.message_dict.items()}
            field = next(iter(errors)) if len(errors) == 1 else None
            return InvalidInput(" ".join(errors.values()), field if field != "__all__" else None,
                                errors={k: v for k, v in errors.items() if k != "__all__"})
        return InvalidInput(" ".join(exc.messages))
    return None


def exception_handler(exc, context):
    app_error = as_app_error(exc)
    if app_error is not None:
        return Response(app_error.as_dict(), status=app_error.status)
    return drf_exception_handler(exc, context)


def add_to_form(form, exc: Exception) -> None:
    """Show a user-facing error on ``form``: on its field when the form has it, else above the form."""
    app_error = as_app_error(exc)
    if app_error is None:
        raise exc
    placed = False
    for field, message in app_error.errors.items():
        form.add_error(field if field in form.fields else None, message)
        placed = True
    if not placed:
        form.add_error(None, app_error.message)


class AppErrorMiddleware:
    """Pages: an AppError no view handled becomes an error page with the error's status and message."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exc):
        app_error = as_app_error(exc)
        if app_error is None:
            return None
        return render(request, "piggyback/error.html", {"message": app_error.message, "status": app_error.status},
                      status=app_error.status)
