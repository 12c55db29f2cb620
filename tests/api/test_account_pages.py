"""Account pages in PiggyBack's layout (issue 12.5) and the landing page for anonymous visitors (12.6)."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db

LAYOUT = ('<nav class="navbar', "vendor/bootstrap/css/bootstrap.min.css", "piggyback/app.css", 'id="main"')


def _assert_layout(html: str):
    for marker in LAYOUT:
        assert marker in html, f"{marker!r} missing: not PiggyBack's layout"


def _inputs(html: str) -> list[str]:
    return [tag for tag in re.findall(r"<input[^>]*>", html) if 'type="hidden"' not in tag]


def _assert_bootstrap_form(html: str):
    inputs = _inputs(html)
    assert inputs, "no visible form field"
    for tag in inputs:
        assert re.search(r'class="[^"]*(form-control|form-check-input)', tag), tag
        field_id = re.search(r'id="([^"]+)"', tag).group(1)
        assert f'for="{field_id}"' in html, f"no label for {field_id}"
    assert 'class="btn btn-primary' in html


def test_anonymous_home_explains_piggyback_without_redirect(client):
    r = client.get("/")
    assert r.status_code == 200
    html = r.content.decode()
    _assert_layout(html)
    for step in ("Upload", "Clean", "Fine-tune", "Evaluate, with attention"):
        assert step in html
    assert 'href="/accounts/login/"' in html and 'href="/accounts/signup/"' in html
    assert "the image regions the model looked at" in html


def test_signed_in_home_keeps_going_to_projects(client, owner):
    client.force_login(owner)
    r = client.get("/")
    assert r.status_code == 302 and r["Location"] == "/projects/"


@pytest.mark.parametrize("url", ["/accounts/login/", "/accounts/signup/", "/accounts/password/reset/"])
def test_entrance_pages_use_the_layout_and_bootstrap_forms(client, url):
    r = client.get(url)
    assert r.status_code == 200
    html = r.content.decode()
    _assert_layout(html)
    _assert_bootstrap_form(html)
    assert 'class="card shadow-sm"' in html


def test_login_error_is_an_alert_that_takes_the_focus(client, owner):
    r = client.post("/accounts/login/", {"login": owner.username, "password": "wrong"})
    assert r.status_code == 200
    html = r.content.decode()
    assert re.search(r'<div class="alert alert-danger" role="alert" id="form-errors" tabindex="-1">\s*<div>The username', html)


def test_signup_field_errors_are_linked_to_their_field(client):
    r = client.post("/accounts/signup/", {"email": "a@example.com", "username": "a1", "password1": "short",
                                          "password2": "other"})
    assert r.status_code == 200
    html = r.content.decode()
    tag = next(t for t in _inputs(html) if 'name="password1"' in t)
    assert 'aria-invalid="true"' in tag and "is-invalid" in tag
    described = re.search(r'aria-describedby="([^"]+)"', tag).group(1).split()
    assert "id_password1-error" in described
    assert re.search(r'id="id_password1-error">[^<]*too short', html)


def test_password_reset_all_steps(client, owner, mailoutbox):
    r = client.post("/accounts/password/reset/", {"email": owner.email})
    assert r.status_code == 302
    done = client.get(r["Location"])
    assert done.status_code == 200
    _assert_layout(done.content.decode())
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+/)", mailoutbox[0].body).group(1)
    r = client.get(link)
    if r.status_code == 302:  # allauth moves the key into the session first
        link = r["Location"]
        r = client.get(link)
    html = r.content.decode()
    assert r.status_code == 200
    _assert_layout(html)
    _assert_bootstrap_form(html)
    r = client.post(link, {"password1": "Another-Horse-43", "password2": "Another-Horse-43"})
    assert r.status_code == 302
    done = client.get(r["Location"])
    assert done.status_code == 200
    _assert_layout(done.content.decode())
    owner.refresh_from_db()
    assert owner.check_password("Another-Horse-43")


def test_bad_reset_key_page_uses_the_layout(client):
    r = client.get("/accounts/password/reset/key/1-bad-key/")
    assert r.status_code == 200
    html = r.content.decode()
    _assert_layout(html)
    assert "Bad Token" in html and 'class="h3 mb-3"' in html


@pytest.mark.parametrize("url", ["/accounts/email/", "/accounts/password/change/", "/accounts/logout/"])
def test_manage_pages_use_the_layout(client, owner, url):
    client.force_login(owner)
    r = client.get(url)
    assert r.status_code == 200
    html = r.content.decode()
    _assert_layout(html)
    assert '<nav class="col-md-3" aria-label="Account">' in html
    assert 'aria-current="page"' in html
    if url != "/accounts/logout/":
        _assert_bootstrap_form(html)


def test_logout_lands_on_the_landing_page_message(client, owner):
    client.force_login(owner)
    r = client.post("/accounts/logout/")
    assert r.status_code == 302
    assert client.get("/").status_code == 200
