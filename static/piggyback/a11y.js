/* PiggyBack accessibility helpers (WCAG 2.1 AA, issue 17).
   - pbAnnounce(text): says text once through the page's polite live region (#pb-announcer).
   - pbProgressAnnouncer(region): returns update(data) that writes a progress message into `region`
     (a role="status" element) only on a meaningful change: a new status, a new epoch, or another 10 %.
   - On load, focus goes to what is new: an error message, else the first invalid field, else a
     freshly arrived result ([data-focus-on-load]); its [data-announce] text is announced politely. */
(function () {
  const STATUS = {queued: "Waiting for a free worker", running: "Running", succeeded: "Finished",
                  failed: "Stopped because of a problem", cancelled: "Cancelled"};

  window.pbAnnounce = function (text) {
    const region = document.getElementById("pb-announcer");
    if (!region || !text) return;
    region.textContent = "";
    // a short pause so screen readers notice the change even when the same text is said twice
    setTimeout(function () { region.textContent = text; }, 150);
  };

  window.pbProgressAnnouncer = function (region, opts) {
    opts = opts || {};
    let last = null;
    return function (data) {
      if (!region) return false;
      const pct = Math.round((data.progress || 0) * 100);
      const m = data.metrics || {};
      const epoch = m.epoch ? "epoch " + m.epoch + (m.epochs_total ? " of " + m.epochs_total : "") : "";
      const key = [data.status, Math.floor(pct / 10), m.epoch || ""].join("|");
      if (key === last) return false;
      last = key;
      const parts = [(opts.label ? opts.label + ": " : "") + (STATUS[data.status] || data.status)];
      if (data.status === "running" || data.status === "queued") parts.push(pct + " %");
      if (epoch) parts.push(epoch);
      if (data.status === "failed" && data.error) parts.push(data.error);
      region.textContent = parts.join(", ");
      return true;
    };
  };

  function visible(el) { return !!(el && el.offsetParent !== null && !el.closest(".d-none")); }

  function focusFirst(selectors) {
    for (const sel of selectors) {
      const el = Array.from(document.querySelectorAll(sel)).find(visible);
      if (el) {
        if (!el.matches("a, button, input, select, textarea, [tabindex]")) el.setAttribute("tabindex", "-1");
        el.focus({preventScroll: false});
        return el;
      }
    }
    return null;
  }

  window.pbFocusNew = function () {
    return focusFirst(["main [data-focus-on-load]", "main .alert-danger[role=alert]", "main [aria-invalid=true]",
                       "main .is-invalid"]);
  };

  document.addEventListener("DOMContentLoaded", function () {
    window.pbFocusNew();
    const say = document.querySelector("main [data-announce]");
    if (say) window.pbAnnounce(say.dataset.announce);
  });
})();
