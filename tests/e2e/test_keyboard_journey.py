"""The main journey with the keyboard alone (issue 17.2): sign in (after a wrong password), create a project,
add the easy-VQA sample, start a quick run, ask a question about a sample image and read the answer — only
Tab / Shift+Tab / Enter / Space / arrow keys and typing, no clicks.

Every element that takes the focus on the way must show a visible focus indicator (a computed outline of at
least 2 px, or a box-shadow), focus must land on the error message after the failed sign-in and on the
answer when it arrives, and the answer, its confidence and right/wrong must reach the polite live region.
Training progress must be announced only on meaningful changes. A real `rqworker` runs the jobs.
"""
from __future__ import annotations

import pytest

from tests.e2e.axe import assert_accessible

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "Correct-Horse-42"

# the focused element, or for Bootstrap's hidden .btn-check radios the label button that shows their focus
_INDICATOR = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return {ok: false, what: "body"};
  const target = el.matches(".btn-check") ? el.nextElementSibling : el;
  const cs = getComputedStyle(target);
  const outline = cs.outlineStyle !== "none" && parseFloat(cs.outlineWidth) >= 2;
  const shadow = !!cs.boxShadow && cs.boxShadow !== "none";
  const r = target.getBoundingClientRect();
  return {ok: (outline || shadow) && r.width > 0 && r.height > 0,
          what: el.outerHTML.slice(0, 120), outline: cs.outlineStyle + " " + cs.outlineWidth, shadow: cs.boxShadow};
}"""


class Keys:
    def __init__(self, page):
        self.page, self.stops = page, 0

    def focused(self, selector: str) -> bool:
        return self.page.locator(selector).evaluate_all("(els) => els.includes(document.activeElement)")

    def assert_indicator(self):
        info = self.page.evaluate(_INDICATOR)
        assert info["ok"], f"no visible focus indicator on {info}"

    def tab_to(self, selector: str, limit: int = 80, back: bool = False):
        """Press Tab (or Shift+Tab) until ``selector`` has the focus; every stop must show its focus."""
        for _ in range(limit):
            self.page.keyboard.press("Shift+Tab" if back else "Tab")
            self.stops += 1
            self.assert_indicator()
            if self.focused(selector):
                return
        raise AssertionError(f"{selector} not reached with {limit} Tab presses on {self.page.url}")

    def type(self, text: str):
        self.page.keyboard.press("Control+A")
        self.page.keyboard.type(text)

    def enter(self, expect_url=None):
        if expect_url:
            with self.page.expect_navigation(url=expect_url):
                self.page.keyboard.press("Enter")
        else:
            self.page.keyboard.press("Enter")


def test_main_journey_with_the_keyboard_alone(page, live_server, live_worker, make_user, shot):
    from django.core.management import call_command

    call_command("sync_models", verbosity=0)
    user = make_user("kim")
    user.set_password(PASSWORD)
    user.save()
    keys = Keys(page)
    page.goto(live_server.url + "/")

    # 1. Sign in, with a wrong password first: the error takes the focus.
    keys.tab_to("a[href='/accounts/login/']")
    keys.enter("**/accounts/login/")
    keys.tab_to("input[name=login]")
    keys.type("kim")
    keys.tab_to("input[name=password]")
    keys.type("not-the-password")
    keys.enter("**/accounts/login/")
    assert keys.focused("#form-errors"), "focus did not move to the sign-in error"
    keys.assert_indicator()
    assert "not correct" in page.inner_text("#form-errors")
    keys.tab_to("input[name=password]")
    keys.type(PASSWORD)
    keys.enter("**/projects/")

    # 2. Create a project.
    keys.tab_to("#id_name")
    keys.type("Keyboard clinic")
    keys.tab_to("button[type=submit]:has-text('Create project')")
    keys.enter("**/projects/*/")

    # 3. Add the easy-VQA sample and wait for the cleaning (the page reloads itself when done).
    keys.tab_to("#datasets-section a:has-text('Upload a dataset')")
    keys.enter("**/upload/")
    keys.tab_to("button:has-text('Add the sample to this project')")
    keys.enter("**/datasets/*/")
    page.wait_for_selector("#result-banner.alert-success", timeout=120_000)

    # 4. Start a quick run of the default model: the model with arrow keys, the preset with arrow keys.
    keys.tab_to("#train-button")
    keys.enter("**/start/")
    keys.tab_to("#id_model")
    for _ in range(30):  # the model list with the arrow keys
        if page.eval_on_selector("#id_model", "s => s.value") == "baseline-rnn":
            break
        page.keyboard.press("ArrowDown")
    assert page.eval_on_selector("#id_model", "s => s.value") == "baseline-rnn"
    keys.tab_to("input[name=preset]")
    for _ in range(4):
        if page.is_checked("#preset-quick"):
            break
        page.keyboard.press("ArrowLeft")
    assert page.is_checked("#preset-quick")
    keys.assert_indicator()
    shot(page, "keyboard-start")
    keys.tab_to("#start-button")
    keys.enter("**/training/runs/*/")

    # Progress: the polite status region changes only on a new status, a new epoch or another 10 %.
    page.evaluate("""() => { const el = document.getElementById("progress-announcer"); window.__said = [];
      new MutationObserver(() => window.__said.push(el.textContent)).observe(el, {childList: true, characterData: true, subtree: true}); }""")
    said, polls = [], 0
    while "/evaluate/runs/" not in page.url and polls < 900:
        try:
            said = page.evaluate("window.__said || []") or said
        except Exception:
            break  # navigating to the evaluation page
        polls += 1
        page.wait_for_timeout(300)
    page.wait_for_url("**/evaluate/runs/*/", timeout=240_000)
    assert said, "training progress was never announced"
    assert all(a != b for a, b in zip(said, said[1:])), f"the same progress was announced twice: {said}"
    assert len(said) <= 10 + 3 + 10, f"progress announced too often: {said}"

    # 5. Ask about the second sample image, chosen with the arrow keys, and read the answer.
    keys.tab_to("input[name=s-sample]:checked")
    page.keyboard.press("ArrowRight")
    keys.assert_indicator()
    keys.tab_to("#s-question")
    page.keyboard.press("ArrowDown")
    keys.tab_to("#sample-form button[type=submit]")
    keys.enter(lambda url: "/evaluate/runs/" in url and "prediction=" in url)
    page.wait_for_selector("[data-testid=answer]")
    assert keys.focused("#result"), "focus did not move to the answer"
    keys.assert_indicator()
    page.wait_for_function("document.getElementById('pb-announcer').textContent.length > 0")
    said = page.inner_text("#pb-announcer") if page.is_visible("#pb-announcer") else page.text_content("#pb-announcer")
    answer = page.inner_text("[data-testid=answer]").strip()
    assert said.startswith(f"Answer: {answer}.") and "Confidence" in said, said
    assert ("right" in said or "wrong" in said), said  # sample questions carry their expected answer
    assert page.locator("[data-testid=regions] li").count() == 5
    shot(page, "keyboard-answer")
    assert_accessible(page, "answer reached with the keyboard")
    assert keys.stops > 10
