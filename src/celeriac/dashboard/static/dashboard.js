// celeriac dashboard: confirmed actions and live updates (server-sent events), no libraries.
(function () {
  "use strict";
  var token = document.querySelector('meta[name="csrf-token"]').content;
  var flash = document.getElementById("flash");
  var content = document.getElementById("content");
  var live = document.getElementById("live");

  function say(text, ok) {
    flash.textContent = text;  // text only: nothing from the server is ever parsed as HTML here
    flash.className = ok ? "ok" : "error";
    flash.hidden = false;
  }

  function refresh() {
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    return fetch(url, {credentials: "same-origin"}).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (html) {
      content.innerHTML = html;  // rendered by the server with every value escaped
      document.dispatchEvent(new Event("celeriac:refreshed"));
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches("form.action")) { return; }
    event.preventDefault();
    if (!window.confirm(form.dataset.confirm || "Are you sure?")) { return; }
    var body = {};
    new FormData(form).forEach(function (value, key) { body[key] = value; });
    fetch(form.dataset.action, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": token},
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().then(function (data) { return [r.ok, data]; });
    }).then(function (pair) {
      var ok = pair[0], data = pair[1];
      say(ok ? (data.message || "done") : ("Refused: " + (data.error || "unknown error")), ok);
      if (ok && data.retry_of && data.task_id) {
        var link = document.createElement("a");
        link.href = "/task/" + encodeURIComponent(data.task_id);
        link.textContent = " open the new task";
        link.id = "new-task-link";
        flash.appendChild(link);
      }
      refresh().catch(function () {});
    }).catch(function (err) { say("The action failed: " + err, false); });
  });

  if (window.EventSource) {
    var source = new EventSource("/api/stream");
    source.addEventListener("open", function () { live.className = "on"; });
    source.addEventListener("error", function () { live.className = "off"; });
    source.addEventListener("change", function () { refresh().catch(function () { live.className = "off"; }); });
  }
})();
