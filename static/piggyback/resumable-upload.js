/* The dataset upload page: files from data-resumable-min-bytes on go through tus (/api/v1/uploads/) in
   pieces, with a progress bar; a dropped connection is retried and continues from the server's offset
   (tus-js-client asks HEAD), also after a page reload (the upload is remembered in localStorage). The form
   is then posted with the upload ids instead of the files. Smaller files: the form is posted as before. */
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form || !window.tus || !window.tus.isSupported) return;
  const minBytes = parseInt(form.dataset.resumableMinBytes || "0", 10);
  const box = document.getElementById("resumable-box");
  const bar = document.getElementById("resumable-progress");
  const status = document.getElementById("resumable-status");
  const submit = document.getElementById("upload-submit");
  const csrf = (form.querySelector("input[name=csrfmiddlewaretoken]") || {}).value || "";
  const CHUNK = parseInt(form.dataset.resumableChunkBytes || "8388608", 10);

  function mb(n) { return (n / 1048576).toFixed(1) + " MB"; }
  function setProgress(done, total, label) {
    const pct = total ? Math.floor(100 * done / total) : 0;
    bar.setAttribute("aria-valuenow", String(pct));
    bar.firstElementChild.style.width = pct + "%";
    bar.firstElementChild.textContent = pct + "%";
    status.textContent = label + ": " + mb(done) + " of " + mb(total);
  }

  function send(name, input) {
    const file = input.files[0];
    return new Promise(function (resolve, reject) {
      const upload = new window.tus.Upload(file, {
        endpoint: "/api/v1/uploads/",
        chunkSize: CHUNK,
        retryDelays: [0, 1000, 2000, 4000, 8000, 15000, 30000],
        removeFingerprintOnSuccess: true,
        // the project: the server stores the bytes where this project's dataset will keep them (no copy later)
        metadata: {filename: file.name, filetype: file.type || "application/octet-stream",
                   project: form.dataset.project || ""},
        headers: {"X-CSRFToken": csrf},
        onProgress: function (sent, total) { setProgress(sent, total, "Sending " + file.name); },
        onShouldRetry: function (err, attempt) {
          const code = err.originalResponse ? err.originalResponse.getStatus() : 0;
          status.textContent = "The connection dropped; continuing " + file.name + " where it stopped (try " + (attempt + 1) + ")…";
          return code === 0 || code === 409 || code === 423 || code >= 500;
        },
        onError: reject,
        onSuccess: function () {
          const id = upload.url.replace(/\/+$/, "").split("/").pop();
          document.getElementById("id_" + name + "_upload").value = id;
          input.value = "";  // the bytes are on the server already: the form carries only the id
          resolve(id);
        },
      });
      upload.findPreviousUploads().then(function (previous) {
        if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
        upload.start();
      });
    });
  }

  form.addEventListener("submit", function (ev) {
    if (form.dataset.sent === "1") return;
    const big = ["images", "questions", "annotations"].map(function (name) {
      return [name, form.querySelector("input[type=file][name=" + name + "]")];
    }).filter(function (pair) { return pair[1] && pair[1].files.length && pair[1].files[0].size >= minBytes; });
    if (!big.length) return;
    ev.preventDefault();
    box.classList.remove("d-none");
    submit.disabled = true;
    big.reduce(function (chain, pair) { return chain.then(function () { return send(pair[0], pair[1]); }); },
               Promise.resolve())
      .then(function () {
        status.textContent = "All files arrived; checking them…";
        form.dataset.sent = "1";
        form.submit();
      })
      .catch(function (err) {
        submit.disabled = false;
        status.textContent = "The upload stopped: " + (err && err.message ? err.message : err) +
          ". Press the button again to continue where it stopped.";
      });
  });
})();
