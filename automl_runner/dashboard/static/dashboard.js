// Keeps a page current without reloading it: polls the page's JSON route (body[data-api]) and
// writes each value into the element that names it (data-bind="path.to.value"). Text only
// (textContent), never HTML, so nothing in the data can become markup.
(function () {
  "use strict";
  function at(obj, path) {
    return path.split(".").reduce(function (o, k) { return o == null ? undefined : o[k]; }, obj);
  }
  function when(t) {
    if (t == null) return "-";
    return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }
  var fmt = {
    score: function (v) { return v == null ? "-" : Number(v).toFixed(4); },
    when: when,
    next: function (v) {  // app.next_choice_text
      if (v == null) return "not scheduled yet";
      if (v.candidate == null) return "nothing left to try";
      var r = v.ei_per_second;
      return v.candidate + ": " + (r == null ? "-" : Number(r).toExponential(2)) + " EI/s";
    },
    devices: function (v) {
      if (!v || !v.length) return "-";
      return v.map(function (r) { return r.candidate + " on " + (r.device || "?"); }).join(", ");
    }
  };
  function apply(data) {
    document.querySelectorAll("[data-bind]").forEach(function (el) {
      var v = at(data, el.getAttribute("data-bind"));
      if (v === undefined) return;
      var f = fmt[el.getAttribute("data-fmt")];
      var text = f ? f(v) : (v == null ? "-" : String(v));
      if (el.textContent !== text) el.textContent = text;
    });
  }
  function poll() {
    var url = document.body.getAttribute("data-api");
    var live = document.getElementById("live");
    if (!url) return;
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) {
        apply(data);
        if (live) { live.className = "live ok"; live.title = "refreshed " + new Date().toISOString(); }
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { if (live) live.className = "live stale"; });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var ms = parseInt(document.body.getAttribute("data-refresh-ms"), 10) || 5000;
    setInterval(poll, ms);
  });
})();
