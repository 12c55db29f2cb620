"""Schemathesis hooks for tests/api/test_schema_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

tus PATCH bodies are ``application/offset+octet-stream`` (raw bytes); schemathesis has no serializer for that
media type and would skip the operation, so it gets the same one as ``application/octet-stream``."""
from __future__ import annotations

import schemathesis
from schemathesis.transport.serialization import serialize_binary


@schemathesis.serializer("application/offset+octet-stream")
def tus_chunk(ctx, value):
    return {"data": serialize_binary(value)}
