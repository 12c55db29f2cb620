"""Makes the current request visible to audit.record() (actor, client address, page/API/admin)."""
from audit.trail import request_context


class AuditRequestMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with request_context(request):
            return self.get_response(request)
