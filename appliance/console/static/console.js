// The console's only script, served from the package (the CSP forbids inline script).
// Pages work without it; it adds confirmations and the live log tail.
"use strict";

document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

function tailLog(pre) {
  var url = pre.getAttribute("data-poll");
  var offset = parseInt(pre.getAttribute("data-offset") || "0", 10);
  var done = ["succeeded", "failed", "cancelled"];
  function poll() {
    fetch(url + "?offset=" + offset, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) {
        if (data.text) {
          var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.appendChild(document.createTextNode(data.text));
          if (atBottom) { pre.scrollTop = pre.scrollHeight; }
        }
        offset = data.offset;
        var state = document.getElementById("job-state");
        if (state) { state.textContent = data.state; }
        if (done.indexOf(data.state) < 0) { window.setTimeout(poll, 2000); }
      })
      .catch(function () { window.setTimeout(poll, 10000); });
  }
  if (done.indexOf(pre.getAttribute("data-state")) < 0) { window.setTimeout(poll, 2000); }
}

document.addEventListener("DOMContentLoaded", function () {
  var pre = document.querySelector("pre[data-poll]");
  if (pre) { tailLog(pre); }
});
