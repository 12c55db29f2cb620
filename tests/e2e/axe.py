"""axe-core in the browser tests: run it on the page as it is now and fail with a readable list.

axe-core comes from npm (package.json devDependencies, installed by ``npm ci``) and is injected into the
page under test; only the WCAG 2.1 A and AA rules run, and violations of impact *serious* or *critical*
fail the test. Minor/moderate findings are returned too, for the report, but do not fail.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AXE_JS = ROOT / "node_modules" / "axe-core" / "axe.min.js"
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
FAILING_IMPACTS = ("serious", "critical")

_RUN = """async (tags) => {
  const r = await axe.run(document, {runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]});
  return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target.join(" "), html: n.html.slice(0, 160),
                              summary: (n.failureSummary || "").split("\\n").slice(0, 3).join(" ")}))}));
}"""


def axe_violations(page) -> list[dict]:
    """Every WCAG 2.1 A/AA violation axe-core finds on ``page`` in its current state."""
    if not AXE_JS.is_file():
        raise RuntimeError(f"{AXE_JS} is missing: run `npm ci` (axe-core is a devDependency in package.json)")
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE_JS))
    return page.evaluate(_RUN, list(WCAG_TAGS))


def format_violations(violations: list[dict], where: str) -> str:
    lines = [f"{len(violations)} serious/critical WCAG 2.1 A/AA violation(s) on {where}:"]
    for v in violations:
        lines.append(f"- [{v['impact']}] {v['id']}: {v['help']} ({len(v['nodes'])} element(s)) {v['helpUrl']}")
        for n in v["nodes"][:6]:
            lines.append(f"    {n['target']}: {n['html']}")
            if n["summary"]:
                lines.append(f"      {n['summary']}")
    return "\n".join(lines)


def assert_accessible(page, label: str = "") -> list[dict]:
    """Fail when axe-core finds a serious or critical WCAG 2.1 A/AA violation; returns the minor ones."""
    found = axe_violations(page)
    failing = [v for v in found if v["impact"] in FAILING_IMPACTS]
    where = f"{label} ({page.url})" if label else page.url
    assert not failing, format_violations(failing, where)
    return found
