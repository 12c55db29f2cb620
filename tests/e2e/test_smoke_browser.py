"""Smallest real-browser check: sign up, create a project, see it listed, log out."""
import pytest

from tests.e2e.axe import assert_accessible

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_signup_and_create_project(page, live_server, shot):
    page.goto(live_server.url + "/accounts/signup/")
    page.fill("input[name=email]", "ada@example.com")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password1]", "Correct-Horse-42")
    page.fill("input[name=password2]", "Correct-Horse-42")
    shot(page, "smoke-signup")
    assert_accessible(page, "sign-up form, filled in")
    page.click("button[type=submit]")
    page.wait_for_url("**/projects/")
    page.fill("#id_name", "Eye clinic")
    page.click("text=Create project")
    page.wait_for_selector("text=Project “Eye clinic” created")
    shot(page, "smoke-project")
    assert_accessible(page, "new project")
    assert "Eye clinic" in page.inner_text("h1")
    # Static assets are served by the platform itself (no CDN): Bootstrap's CSS applied.
    assert page.evaluate("getComputedStyle(document.querySelector('nav')).backgroundColor") != "rgba(0, 0, 0, 0)"
