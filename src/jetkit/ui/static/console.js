// jetkit ui: refresh each [data-live] element from its URL (the same page, ?part=live)
// every few seconds, without reloading the page. Nothing is loaded from elsewhere.
(function () {
  "use strict";
  var parts = document.querySelectorAll("[data-live]");
  var state = document.getElementById("live-state");
  var every = parseInt(document.body.getAttribute("data-refresh-ms"), 10) || 2000;
  if (!parts.length) return;

  function show(text) {
    if (state) state.textContent = text;
  }

  function refresh(el) {
    return fetch(el.getAttribute("data-live"), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        el.innerHTML = html; // server-rendered, every value escaped there
        show("live · " + new Date().toLocaleTimeString());
      });
  }

  function tick() {
    Promise.all(Array.prototype.map.call(parts, refresh))
      .catch(function (e) { show("console unreachable (" + e.message + ")"); })
      .then(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
