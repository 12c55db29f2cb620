"""/api/v1/uploads/ — a tus 1.0.0 server (core protocol + creation, termination and expiration extensions).

Resumable uploads for files beyond one HTTP request: ``POST`` creates an upload of a declared
``Upload-Length`` (201 + ``Location``), ``PATCH`` appends bytes at ``Upload-Offset`` (a different offset
answers 409), ``HEAD`` tells the offset the server holds so an interrupted upload resumes from there, and
``DELETE`` removes it. The bytes are appended straight into the storage backend at the upload's stored
name (no temporary second copy). Uploads are private to their user (another user's id answers 404),
limited in size and in number of unfinished uploads per user, and expire (``Upload-Expires``) when left
unfinished. ``POST /api/v1/datasets/`` takes ``images_upload`` / ``questions_upload`` /
``annotations_upload`` = the last path segment of the ``Location``.

Storage backends:

* local folder: ``PATCH`` appends to the file (a broken-off write past the recorded offset is cut off by the
  next ``PATCH``); the dataset takes the file by a rename.
* S3 (django-storages): ``POST`` starts a multipart upload at the stored name (its UploadId, and later its
  parts' numbers, ETags and sizes, are recorded on the :class:`ResumableUpload` row). ``PATCH`` streams the
  body into parts of ``RESUMABLE_UPLOAD_PART_BYTES`` (at least S3's 5 MiB; one part in memory at a time);
  the bytes after the last full part, fewer than a part, wait in a small tail object in the bucket
  (``<name>.tail/<offset>``, a new one per recorded state), so any web process can take the next ``PATCH``
  and ``Upload-Offset`` = the parts' bytes + the tail's. A request cut short keeps what arrived, as on a
  local disk; a process killed mid-``PATCH`` leaves the row's state as it was (parts it sent past the
  recorded ones are sent again under the same numbers; tails it wrote go at completion). The last ``PATCH``
  sends the tail as the last part and completes the upload. Bytes removed behind the server's back (a
  lifecycle rule) answer 404 and the upload is dropped.
  ``DELETE`` and expiry abort the multipart upload and delete the tails.

Where the bytes go: an upload whose ``Upload-Metadata`` names a ``project`` (one where the user is an editor;
the upload page always sends it) is stored from the start under that project's upload names
(``projects/<id>/uploads/<upload id>.<ext>``), and a dataset of that project takes the file where it lies: no
rename, no copy. Without ``project`` (or for a dataset of another project) the dataset takes it by a rename on a
local disk, or on S3 by a server-side copy (multipart copy above 256 MiB, so beyond 5 GB too) and a delete,
inside the dataset-creation request: no byte passes through the web process, but S3 copies a large ZIP at its
own speed, so clients should send ``project``.

drf-tus (PyPI) was considered: it writes every chunk to a local temporary file and copies it to storage
at the end, reads whole chunks into memory, and has no per-user ownership or limits, so the protocol is
implemented here (it is small) on the project's storage helpers.
"""
from __future__ import annotations

import base64
import binascii
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone
from django.utils.http import http_date
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from datasets_app.models import ResumableUpload, project_upload_name
from piggyback import files

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination,expiration"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = f"This server speaks tus {TUS_VERSION}; send the header 'Tus-Resumable: {TUS_VERSION}'."
    default_code = "tus_version"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class TooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


def _limits():
    return (settings.RESUMABLE_UPLOAD_MAX_BYTES, settings.RESUMABLE_UPLOADS_PER_USER,
            timedelta(hours=settings.RESUMABLE_UPLOAD_EXPIRY_HOURS))


def parse_metadata(header: str) -> dict:
    """``Upload-Metadata: key base64,key2 base64`` -> dict of text values."""
    out = {}
    for pair in filter(None, (p.strip() for p in (header or "").split(","))):
        key, _, value = pair.partition(" ")
        if not key or " " in value.strip():
            raise exceptions.ValidationError({"Upload-Metadata": f"'{pair[:60]}' is not 'key base64-value'."})
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8") if value.strip() else ""
        except (binascii.Error, UnicodeDecodeError):
            raise exceptions.ValidationError(
                {"Upload-Metadata": f"The value of '{key[:40]}' is not base64-encoded UTF-8."}) from None
    return out


def _project_for_upload(user, raw) -> int | None:
    """The ``project`` of ``Upload-Metadata`` (optional): a project where the user may add datasets."""
    from piggyback.filters import id_param
    from piggyback.models import Project
    from piggyback.tenancy import has_role

    if raw is None or not str(raw).strip():
        return None
    raw = str(raw).strip()
    pk = id_param(raw)
    if pk is None:
        raise exceptions.ValidationError(
            {"Upload-Metadata": f"'project' must be the id of one of your projects (a whole number), not '{raw[:40]}'."})
    project = Project.objects.filter(pk=pk).first()
    if project is None or not has_role(user, project, "editor"):
        raise exceptions.ValidationError({"Upload-Metadata": (
            f"You cannot add datasets to project {raw}: it is not one of your projects, or you are not an "
            f"editor there. Leave 'project' out, or name a project where you are an editor.")})
    return project.pk


def _int_header(request, name: str) -> int:
    raw = request.headers.get(name)
    if raw is None or not raw.strip().isdigit():
        raise exceptions.ValidationError({name: f"Send the header '{name}' as a whole number of bytes."})
    return int(raw)


def purge_expired(now=None) -> int:
    """Remove unfinished uploads past their expiry (row and stored bytes); returns how many."""
    now = now or timezone.now()
    n = 0
    for up in ResumableUpload.objects.filter(expires_at__lt=now)[:500]:
        _delete(up)
        n += 1
    return n


def _delete(up: ResumableUpload) -> None:
    from datasets_app.services import delete_stored_name

    if up.multipart_id:
        files.abort_resumable(up.storage_name, up.multipart_id)
    delete_stored_name(up.storage_name)
    up.delete()


# every tus operation answers 412 when Tus-Resumable is missing or not 1.0.0 (the protocol's rule)
TUS_412 = {412: OpenApiResponse(description="Tus-Resumable header missing or not 1.0.0 (Tus-Version names it)")}


class _TusView(APIView):
    """Shared: the Tus-Resumable check and the headers every answer carries."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication first: anonymous gets 403 like the API
        if request.method != "OPTIONS" and request.headers.get("Tus-Resumable") != TUS_VERSION:
            raise PreconditionFailed()

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Tus-Resumable"] = TUS_VERSION
        response["Cache-Control"] = "no-store"
        if response.status_code == status.HTTP_412_PRECONDITION_FAILED:
            response["Tus-Version"] = TUS_VERSION
        return response

    def options(self, request, *args, **kwargs):
        max_bytes, _, _ = _limits()
        return Response(status=status.HTTP_204_NO_CONTENT, headers={
            "Tus-Version": TUS_VERSION, "Tus-Extension": TUS_EXTENSIONS, "Tus-Max-Size": str(max_bytes)})


class UploadCreateView(_TusView):
    @extend_schema(
        summary="Create a resumable (tus 1.0) upload",
        request=None,
        parameters=[OpenApiParameter("Tus-Resumable", str, OpenApiParameter.HEADER, required=True),
                    OpenApiParameter("Upload-Length", int, OpenApiParameter.HEADER, required=True),
                    OpenApiParameter("Upload-Metadata", str, OpenApiParameter.HEADER,
                                     description="filename <base64>, project <base64 of a project id>, ... "
                                                 "(with 'project', a dataset of that project takes the file "
                                                 "where it lies: no copy)")],
        responses={**TUS_412, 201: OpenApiResponse(description="Created; Location names the upload"),
                   413: OpenApiResponse(description="Larger than the limit"),
                   429: OpenApiResponse(description="Too many unfinished uploads")},
    )
    def post(self, request):
        max_bytes, per_user, lifetime = _limits()
        length = _int_header(request, "Upload-Length")
        if length > max_bytes:
            raise TooLarge(f"The file is {length:,} bytes; the limit for one upload is {max_bytes:,} bytes.")
        if length == 0:
            raise exceptions.ValidationError({"Upload-Length": "The file is empty (0 bytes)."})
        meta = parse_metadata(request.headers.get("Upload-Metadata", ""))
        purge_expired()
        if ResumableUpload.objects.filter(user=request.user).count() >= per_user:
            raise exceptions.Throttled(detail=(
                f"You already have {per_user} unfinished uploads (the limit). Finish, use or delete one "
                f"(DELETE its URL) before starting another."))
        uid = uuid.uuid4().hex
        filename = (meta.get("filename") or meta.get("name") or "")[:255]
        project_id = _project_for_upload(request.user, meta.get("project"))
        # with the dataset's project known, the bytes go where the dataset will keep them: no copy at the end
        name = (project_upload_name(project_id, filename, stem=uid) if project_id is not None
                else f"uploads/resumable/{request.user.pk}/{uid}.part")
        try:
            multipart_id = files.start_resumable(name)
        except files.AppendNotSupported:
            raise exceptions.ValidationError(
                "Resumable uploads need a local folder or S3 as the storage backend; upload the files "
                "directly with POST /api/v1/datasets/ instead.") from None
        up = ResumableUpload.objects.create(id=uid, user=request.user, length=length, filename=filename,
                                            metadata=meta, storage_name=name, multipart_id=multipart_id,
                                            expires_at=timezone.now() + lifetime)
        location = request.build_absolute_uri(f"/api/v1/uploads/{uid}/")
        return Response({"id": uid, "location": location}, status=status.HTTP_201_CREATED,
                        headers={"Location": location, "Upload-Offset": "0",
                                 "Upload-Expires": http_date(up.expires_at.timestamp())})


class UploadDetailView(_TusView):
    def _get(self, request, upload_id, *, lock=False) -> ResumableUpload:
        qs = ResumableUpload.objects.filter(user=request.user, pk=upload_id, expires_at__gte=timezone.now())
        if lock:
            try:
                qs = qs.select_for_update(nowait=True)
                up = qs.first()
            except DatabaseError:
                raise Conflict("Another request is writing to this upload right now; ask HEAD for the offset "
                               "and continue when it is done.") from None
        else:
            up = qs.first()
        if up is None:
            raise exceptions.NotFound("No such upload (it finished and was used, expired, or is not yours).")
        return up

    def _headers(self, up: ResumableUpload) -> dict:
        return {"Upload-Offset": str(up.offset), "Upload-Length": str(up.length),
                "Upload-Expires": http_date(up.expires_at.timestamp())}

    @extend_schema(summary="Offset of a resumable upload (HEAD)", request=None,
                   responses={**TUS_412, 200: OpenApiResponse(description="Upload-Offset / Upload-Length headers")})
    def head(self, request, upload_id):
        return Response(status=status.HTTP_200_OK, headers=self._headers(self._get(request, upload_id)))

    @extend_schema(summary="State of a resumable upload", request=None,
                   responses={**TUS_412, 200: OpenApiResponse(description="offset, length, filename, expires")})
    def get(self, request, upload_id):
        up = self._get(request, upload_id)
        return Response({"id": up.pk, "offset": up.offset, "length": up.length, "filename": up.filename,
                         "complete": up.is_complete, "expires_at": up.expires_at},
                        headers=self._headers(up))

    @extend_schema(summary="Append bytes at Upload-Offset (tus PATCH)", request={OFFSET_CONTENT_TYPE: bytes},
                   responses={**TUS_412, 204: OpenApiResponse(description="New Upload-Offset in the headers"),
                              409: OpenApiResponse(description="Upload-Offset is not the server's offset"),
                              415: OpenApiResponse(description="Wrong Content-Type")})
    def patch(self, request, upload_id):
        if request.content_type.split(";")[0].strip() != OFFSET_CONTENT_TYPE:
            raise exceptions.UnsupportedMediaType(request.content_type or "(none)",
                                                  detail=f"Send the bytes as '{OFFSET_CONTENT_TYPE}'.")
        offset = _int_header(request, "Upload-Offset")
        try:
            up = self._append(request, upload_id, offset)
        except FileNotFoundError:  # S3: the multipart upload or its tail was removed behind our back
            for gone in ResumableUpload.objects.filter(user=request.user, pk=upload_id):
                _delete(gone)
            raise exceptions.NotFound("The bytes of this upload are no longer in the storage (removed by the "
                                      "storage's clean-up); start the upload again.") from None
        return Response(status=status.HTTP_204_NO_CONTENT, headers=self._headers(up))

    def _append(self, request, upload_id, offset: int) -> ResumableUpload:
        with transaction.atomic():
            up = self._get(request, upload_id, lock=True)
            if offset != up.offset:
                raise Conflict(f"Upload-Offset {offset:,} does not match the {up.offset:,} bytes the server "
                               f"holds; ask HEAD for the offset and resume from there.")
            declared = request.headers.get("Content-Length", "")
            if declared.isdigit() and up.offset + int(declared) > up.length:
                raise TooLarge(f"These {int(declared):,} bytes would go past the declared length of "
                               f"{up.length:,} bytes.")
            if up.multipart_id:
                self._append_parts(up, request._request)
            else:
                up.offset += files.append_stream(up.storage_name, up.offset, request._request,
                                                 up.length - up.offset)
                up.save(update_fields=["offset"])
        return up

    @staticmethod
    def _append_parts(up: ResumableUpload, stream) -> None:
        """S3: the bytes go up as parts; the row records the parts and the new tail, and the tail it
        replaces is deleted once that is committed (until then it is the recorded state)."""
        old_tail = up.tail_name
        written, up.parts, up.tail_name = files.append_parts(
            up.storage_name, up.multipart_id, up.parts, up.tail_name, up.offset, stream, up.length - up.offset,
            length=up.length, part_bytes=files.part_size(up.length, settings.RESUMABLE_UPLOAD_PART_BYTES))
        up.offset += written
        up.save(update_fields=["offset", "parts", "tail_name"])
        if old_tail and old_tail != up.tail_name and not up.is_complete:  # complete: all tails went already
            transaction.on_commit(lambda: files.discard_tail(old_tail))

    @extend_schema(summary="Delete a resumable upload (tus termination)", request=None,
                   responses={**TUS_412, 204: OpenApiResponse(description="Deleted")})
    def delete(self, request, upload_id):
        with transaction.atomic():
            _delete(self._get(request, upload_id, lock=True))
        return Response(status=status.HTTP_204_NO_CONTENT)
