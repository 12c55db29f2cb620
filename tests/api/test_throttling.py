"""Abuse resistance, limits: failed sign-ins at the token endpoint (allauth's login_failed limits, shared with the
log-in page), per-user API limits by class of operation, staff overrides, and token revocation.

Every limit is set low with ``override_settings`` and the clocks are fake, so "after the window" needs no sleep.
"""
from __future__ import annotations

import time
import types

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

TOKEN_URL = "/api/v1/auth/token/"


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    """One fake wall clock for allauth's rate limits, the Retry-After computation and the DRF throttles."""
    import allauth.core.internal.ratelimit as allauth_rl

    from piggyback import auth_api, throttling

    c = Clock()
    fake_time = types.SimpleNamespace(time=c, monotonic=time.monotonic, sleep=time.sleep)
    monkeypatch.setattr(allauth_rl, "time", fake_time)
    monkeypatch.setattr(auth_api, "time", fake_time)
    monkeypatch.setattr(throttling.OperationThrottle, "timer", staticmethod(c))
    return c


def login_limits(rates):
    return override_settings(ACCOUNT_RATE_LIMITS={"login_failed": rates})


def api_rates(**rates):
    conf = dict(django_settings.REST_FRAMEWORK)
    conf["DEFAULT_THROTTLE_RATES"] = {**conf["DEFAULT_THROTTLE_RATES"], **rates}
    return override_settings(REST_FRAMEWORK=conf)


def token(client, username, password, ip="127.0.0.1"):
    return client.post(TOKEN_URL, {"username": username, "password": password}, format="json", REMOTE_ADDR=ip)


def assert_429(r, *words):
    assert r.status_code == 429, (r.status_code, r.content[:300])
    retry = int(r["Retry-After"])
    assert retry >= 1
    detail = r.json()["detail"]
    assert f"Expected available in {retry} second" in detail, detail
    for w in words:
        assert w in detail, detail
    return retry


# ------------------------------------------------------------------------------------ failed sign-ins (token)
def test_failed_sign_ins_per_username_answer_429_then_recover(api_client, owner, clock):
    with login_limits("100/m/ip,3/m/key"):
        for _ in range(3):
            assert token(api_client, "olivia", "wrong").status_code == 400
        r = token(api_client, "olivia", "pw-olivia-123")  # the right password does not help while locked
        retry = assert_429(r, "Too many failed sign-ins")
        assert 55 <= retry <= 60
        # case does not make a new username; other usernames are not locked by this one
        assert token(api_client, "OLIVIA", "wrong").status_code == 429
        assert token(api_client, "mallory", "wrong").status_code == 400
        clock.advance(30)
        assert 25 <= assert_429(token(api_client, "olivia", "pw-olivia-123")) <= 30
        clock.advance(31)
        r = token(api_client, "olivia", "pw-olivia-123")
        assert r.status_code == 200 and r.json()["token"]


def test_per_username_limit_does_not_depend_on_the_host_named(api_client, client, owner, clock):
    """allauth keys the limit by "<site domain>:<username>", and without the sites framework the domain is the
    Host header, port included: each allowed host name or port was a fresh budget of guesses for the account."""
    hosts = ["localhost", "127.0.0.1", "127.0.0.1:8001", "LOCALHOST:9", "[::1]:80"]
    with login_limits("100/m/ip,3/m/key"):
        for host in hosts[:3]:
            r = api_client.post(TOKEN_URL, {"username": "olivia", "password": "wrong"}, format="json", HTTP_HOST=host)
            assert r.status_code == 400, (host, r.status_code)
        for host in hosts:
            r = api_client.post(TOKEN_URL, {"username": "olivia", "password": "pw-olivia-123"}, format="json",
                                HTTP_HOST=host)
            assert_429(r, "Too many failed sign-ins")
        r = client.post("/accounts/login/", {"login": "olivia", "password": "pw-olivia-123"}, HTTP_HOST="127.0.0.1:7")
        assert r.status_code == 200 and b"Too many failed login attempts" in r.content
        clock.advance(61)
        r = api_client.post(TOKEN_URL, {"username": "olivia", "password": "pw-olivia-123"}, format="json",
                            HTTP_HOST="127.0.0.1:8001")
        assert r.status_code == 200


def test_failed_sign_ins_per_client_address(api_client, owner, make_user, clock):
    make_user("bob")
    with login_limits("2/m/ip,100/m/key"):
        assert token(api_client, "olivia", "wrong", ip="10.0.0.1").status_code == 400
        assert token(api_client, "bob", "wrong", ip="10.0.0.1").status_code == 400
        assert_429(token(api_client, "nobody", "x", ip="10.0.0.1"))
        assert_429(token(api_client, "bob", "pw-bob-123", ip="10.0.0.1"))
        # another address is not affected
        assert token(api_client, "bob", "pw-bob-123", ip="10.0.0.2").status_code == 200
        clock.advance(61)
        assert token(api_client, "bob", "pw-bob-123", ip="10.0.0.1").status_code == 200


def test_successful_sign_ins_do_not_count(api_client, owner, clock):
    with login_limits("2/m/ip,2/m/key"):
        for _ in range(6):
            assert token(api_client, "olivia", "pw-olivia-123").status_code == 200
        assert token(api_client, "olivia", "wrong").status_code == 400


def test_pages_and_api_share_one_limit(client, api_client, owner, clock):
    with login_limits("100/m/ip,2/m/key"):
        assert token(api_client, "olivia", "wrong").status_code == 400
        r = client.post("/accounts/login/", {"login": "olivia", "password": "wrong"})
        assert r.status_code == 200 and b"Too many failed login attempts" not in r.content
        # two failures (one API, one page): both doors are closed for this username now
        r = client.post("/accounts/login/", {"login": "olivia", "password": "pw-olivia-123"})
        assert r.status_code == 200 and b"Too many failed login attempts" in r.content
        assert_429(token(api_client, "olivia", "pw-olivia-123"))
        clock.advance(61)
        assert client.post("/accounts/login/", {"login": "olivia", "password": "pw-olivia-123"}).status_code == 302


def test_token_endpoint_bad_input(api_client, owner):
    r = api_client.post(TOKEN_URL, {"username": "olivia"}, format="json")
    assert r.status_code == 400 and "password" in r.json()
    r = api_client.post(TOKEN_URL, {"username": "", "password": ""}, format="json")
    assert r.status_code == 400
    r = api_client.post(TOKEN_URL, {"username": "o" * 300, "password": "x"}, format="json")
    assert r.status_code == 400 and "username" in r.json()


def test_inactive_account_cannot_get_a_token(api_client, owner):
    owner.is_active = False
    owner.save()
    assert token(api_client, "olivia", "pw-olivia-123").status_code == 400


# ------------------------------------------------------------------------------------ token revocation
def test_owner_revokes_token(api_client, owner):
    key = token(api_client, "olivia", "pw-olivia-123").json()["token"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api_client.get("/api/v1/projects/").status_code == 200
    assert api_client.delete(TOKEN_URL).status_code == 204
    assert api_client.get("/api/v1/projects/").status_code in (401, 403)
    api_client.credentials()
    new = token(api_client, "olivia", "pw-olivia-123").json()["token"]
    assert new != key


def test_revoke_without_token_and_anonymous(client_for, owner):
    assert client_for(owner).delete(TOKEN_URL).status_code == 404
    assert client_for(None).delete(TOKEN_URL).status_code in (401, 403)


def test_password_change_page_revokes_tokens(client, api_client, owner):
    from rest_framework.authtoken.models import Token

    token(api_client, "olivia", "pw-olivia-123")
    assert Token.objects.filter(user=owner).exists()
    client.force_login(owner)
    r = client.post("/accounts/password/change/", {"oldpassword": "pw-olivia-123", "password1": "N3w-long-secret!",
                                                   "password2": "N3w-long-secret!"})
    assert r.status_code == 302
    assert not Token.objects.filter(user=owner).exists()
    assert token(api_client, "olivia", "N3w-long-secret!").status_code == 200


def test_password_reset_revokes_tokens(client, api_client, owner, mailoutbox):
    import re

    from rest_framework.authtoken.models import Token

    token(api_client, "olivia", "pw-olivia-123")
    assert client.post("/accounts/password/reset/", {"email": owner.email}).status_code == 302
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+/)", mailoutbox[0].body).group(1)
    r = client.get(link, follow=True)
    form_url = r.redirect_chain[-1][0] if r.redirect_chain else link
    r = client.post(form_url, {"password1": "N3w-long-secret!", "password2": "N3w-long-secret!"})
    assert r.status_code == 302, r.content[:500]
    assert not Token.objects.filter(user=owner).exists()


def test_password_hash_upgrade_at_sign_in_keeps_the_token(api_client, owner, settings):
    """Django re-hashes a password with the preferred hasher at a successful sign-in: not a password change."""
    from rest_framework.authtoken.models import Token

    key = token(api_client, "olivia", "pw-olivia-123").json()["token"]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher",
                                 "django.contrib.auth.hashers.MD5PasswordHasher"]
    assert token(api_client, "olivia", "pw-olivia-123").json()["token"] == key
    owner.refresh_from_db()
    assert owner.password.startswith("pbkdf2_")  # it was upgraded ...
    assert Token.objects.filter(key=key).exists()  # ... and the token survived


def test_other_saves_of_the_user_keep_the_token(api_client, owner):
    from rest_framework.authtoken.models import Token

    token(api_client, "olivia", "pw-olivia-123")
    owner.refresh_from_db()
    owner.email = "olivia@new.example.com"
    owner.save()
    owner.last_login = None
    owner.save(update_fields=["last_login"])
    assert Token.objects.filter(user=owner).exists()


# ------------------------------------------------------------------------------------ per-user API limits
def test_reads_limit_then_recover(client_for, owner, clock):
    c = client_for(owner)
    with api_rates(read="3/minute"):
        for _ in range(3):
            assert c.get("/api/v1/projects/").status_code == 200
        retry = assert_429(c.get("/api/v1/datasets/"), "Too many reads", "3 per minute")
        assert 55 <= retry <= 60
        clock.advance(61)
        assert c.get("/api/v1/projects/").status_code == 200


@pytest.mark.parametrize("scope, request_args, words", [
    ("predict", ("post", "/api/v1/training-runs/999999/predict/", {}), "Too many predictions"),
    ("predict", ("post", "/api/v1/models/nope/predict/?project=1", {}), "Too many predictions"),
    ("upload", ("post", "/api/v1/datasets/", {}), "Too many uploads"),
    ("job", ("post", "/api/v1/training-runs/", {}), "Too many job starts"),
    ("job", ("post", "/api/v1/evaluations/", {}), "Too many job starts"),
    ("job", ("post", "/api/v1/datasets/999999/retry/", {}), "Too many job starts"),
    ("job", ("post", "/api/v1/training-runs/999999/resume/", {}), "Too many job starts"),
    ("job", ("post", "/api/v1/training-runs/999999/rerun/", {}), "Too many job starts"),
    ("job", ("post", "/api/v1/evaluations/999999/retry/", {}), "Too many job starts"),
    ("write", ("post", "/api/v1/projects/", {"name": "x"}), "Too many changes"),
])
def test_each_class_of_operation_is_limited(client_for, owner, clock, scope, request_args, words):
    method, url, data = request_args
    c = client_for(owner)
    with api_rates(**{scope: "2/hour"}):
        for _ in range(2):
            r = getattr(c, method)(url, data, format="multipart" if scope != "write" else "json")
            assert r.status_code != 429
        r = getattr(c, method)(url, data, format="multipart" if scope != "write" else "json")
        assert 3590 <= assert_429(r, words, "2 per hour") <= 3600
        # reads are another class: still fine
        assert c.get("/api/v1/projects/").status_code == 200
        clock.advance(3601)
        assert getattr(c, method)(url, data, format="multipart" if scope != "write" else "json").status_code != 429


def test_job_starts_share_one_budget_and_users_are_separate(client_for, owner, other_user, clock):
    c = client_for(owner)
    with api_rates(job="2/minute"):
        c.post("/api/v1/training-runs/", {}, format="json")
        c.post("/api/v1/evaluations/", {}, format="multipart")
        assert_429(c.post("/api/v1/datasets/1/retry/"))
        assert client_for(other_user).post("/api/v1/training-runs/", {}, format="json").status_code == 400


def test_refused_request_changes_nothing(client_for, owner, clock):
    from piggyback.models import Project

    c = client_for(owner)
    with api_rates(write="1/minute"):
        assert c.post("/api/v1/projects/", {"name": "one"}, format="json").status_code == 201
        assert_429(c.post("/api/v1/projects/", {"name": "two"}, format="json"))
    assert list(Project.objects.filter(owner=owner).values_list("name", flat=True)) == ["one"]


def test_staff_override_multiplier_and_explicit_rate(client_for, owner, other_user, clock):
    from piggyback.models import RateLimitOverride

    c = client_for(owner)
    with api_rates(read="2/minute", predict="1/minute"):
        override = RateLimitOverride.objects.create(user=owner, multiplier=2.5)
        for _ in range(5):  # 2 x 2.5
            assert c.get("/api/v1/projects/").status_code == 200
        assert_429(c.get("/api/v1/projects/"), "5 per minute")
        # the other user keeps the default
        o = client_for(other_user)
        o.get("/api/v1/projects/")
        o.get("/api/v1/projects/")
        assert_429(o.get("/api/v1/projects/"), "2 per minute")
        # an explicit rate replaces default x multiplier for that class; saving takes effect at once
        override.predict_rate = "3/hour"
        override.save()
        for _ in range(3):
            assert c.post("/api/v1/training-runs/999999/predict/").status_code == 404
        assert_429(c.post("/api/v1/training-runs/999999/predict/"), "3 per hour")
        override.delete()
        clock.advance(61)
        c.get("/api/v1/projects/")
        c.get("/api/v1/projects/")
        assert_429(c.get("/api/v1/projects/"), "2 per minute")


def test_override_is_edited_in_the_admin(client, make_user, owner):
    from piggyback.models import RateLimitOverride

    staff = make_user("root_admin", is_staff=True, is_superuser=True)
    client.force_login(staff)
    assert client.get("/admin/piggyback/ratelimitoverride/add/").status_code == 200
    r = client.post("/admin/piggyback/ratelimitoverride/add/", {
        "user": owner.pk, "multiplier": "0", "predict_rate": "lots", "reason": ""})
    assert r.status_code == 200  # refused, with the reasons
    assert b"is not a rate" in r.content and not RateLimitOverride.objects.exists()
    r = client.post("/admin/piggyback/ratelimitoverride/add/", {
        "user": owner.pk, "multiplier": "4", "predict_rate": "5000/hour", "reason": "load test"})
    assert r.status_code == 302
    row = RateLimitOverride.objects.get(user=owner)
    assert row.multiplier == 4 and row.predict_rate == "5000/hour"


def test_token_endpoint_is_not_under_the_api_limits(api_client, owner, clock):
    with api_rates(read="1/minute", write="1/minute"):
        for _ in range(4):
            assert token(api_client, "olivia", "pw-olivia-123").status_code == 200


def test_limits_are_in_the_api_docs(client):
    schema = client.get("/api/schema/?format=json").json()
    predict = schema["paths"]["/api/v1/training-runs/{id}/predict/"]["post"]
    assert "Rate limit (predict)" in predict["description"] and "600 per minute" in predict["description"]
    assert "429" in predict["responses"]
    assert "Rate limit (upload)" in schema["paths"]["/api/v1/datasets/"]["post"]["description"]
    assert "Rate limit (read)" in schema["paths"]["/api/v1/datasets/"]["get"]["description"]
    assert "Rate limit (job)" in schema["paths"]["/api/v1/training-runs/"]["post"]["description"]
    sign_in = schema["paths"]["/api/v1/auth/token/"]["post"]
    assert "failed sign-ins per 60 s per username" in sign_in["description"] and "429" in sign_in["responses"]


@pytest.mark.parametrize("rate, parsed", [("600/minute", (600, 60)), ("5/m", (5, 60)), ("100/5m", (100, 300)),
                                          ("20/hour", (20, 3600)), ("1/d", (1, 86400)), ("3/sec", (3, 1))])
def test_parse_rate(rate, parsed):
    from piggyback.throttling import parse_rate

    assert parse_rate(rate) == parsed


@pytest.mark.parametrize("rate", ["", "lots", "0/minute", "5/fortnight", "5/", "/m", "-1/m"])
def test_parse_rate_refuses(rate):
    from piggyback.throttling import parse_rate

    with pytest.raises(ValueError):
        parse_rate(rate)


def test_cache_is_shared_redis():
    """Throttle state must be seen by every gunicorn worker: the cache is Redis, in tests as in production."""
    assert django_settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert django_settings.CACHES["default"]["LOCATION"] == django_settings.REDIS_URL
