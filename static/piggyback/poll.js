/* PiggyBack: poll a background row's API endpoint with exponential backoff and jitter.
   pbPoll(url, onData) calls onData(json) after every answer and stops when the row is final
   (onData returns true) or the page goes away. */
(function () {
  const FINAL = ["succeeded", "failed", "cancelled"];
  window.pbPoll = function (url, onData, opts) {
    opts = opts || {};
    let delay = opts.initial || 700;
    const max = opts.max || 8000;
    let stopped = false;
    async function tick() {
      if (stopped) return;
      try {
        const r = await fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" });
        if (r.ok) {
          const data = await r.json();
          const stop = onData(data);
          if (stop === true || (data && FINAL.includes(data.status) && stop !== false)) { stopped = true; return; }
          delay = Math.max(opts.initial || 700, delay * 0.8);
        } else {
          delay = Math.min(max, delay * 2);
        }
      } catch (e) {
        delay = Math.min(max, delay * 2);
      }
      const jitter = delay * (0.75 + Math.random() * 0.5);
      delay = Math.min(max, delay * 1.3);
      setTimeout(tick, jitter);
    }
    tick();
    return { stop: function () { stopped = true; } };
  };
  window.pbProgressBar = function (el, data) {
    if (!el) return;
    const pct = Math.round((data.progress || 0) * 100);
    const bar = el.querySelector(".progress-bar");
    bar.style.width = pct + "%";
    bar.textContent = pct + "%";
    // Bootstrap 5.3 markup: the outer .progress carries role="progressbar" and the aria-value* attributes.
    el.setAttribute("aria-valuenow", pct);
    el.setAttribute("aria-valuetext", pct + " %" + (data.stage ? ", " + data.stage : ""));
    bar.classList.toggle("progress-bar-animated", data.status === "running" || data.status === "queued");
    bar.classList.toggle("bg-danger", data.status === "failed");
    bar.classList.toggle("bg-success", data.status === "succeeded");
    bar.classList.toggle("bg-secondary", data.status === "cancelled");
  };
})();
