// The live run page: the server streams "changed" events (Server-Sent Events fed by a Firestore listener on the
// run and its steps); each one swaps in the page's live part, rendered and escaped by the server. If the stream
// drops, the page polls instead. Nothing runs once the run has ended. A hidden tab lets go of its stream (a
// browser keeps six connections to a host over HTTP/1.1, and each stream holds one) and catches up when shown.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.events) { return; }
  var source = null;
  var poller = null;
  var POLL_MS = 3000;

  function ended() {
    var state = live.querySelector("[data-terminal]");
    return state !== null && state.getAttribute("data-terminal") === "true";
  }

  function stop() {
    if (source !== null) { source.close(); source = null; }
    if (poller !== null) { clearInterval(poller); poller = null; }
    var note = document.getElementById("live-note");
    if (note !== null) { note.textContent = "The run has ended."; }
  }

  function refresh() {
    return fetch(live.dataset.fragment, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        // Signed out meanwhile (the fragment's request was sent to the sign-in page): show that page whole.
        if (response.redirected || response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null) { live.innerHTML = html; }
        if (ended()) { stop(); }
      })
      .catch(function () { /* the next event or poll tries again */ });
  }

  function poll() {
    if (source !== null) { source.close(); source = null; }
    if (poller === null) { poller = setInterval(refresh, POLL_MS); }
    refresh();
  }

  function listen() {
    source = new EventSource(live.dataset.events);
    source.addEventListener("changed", refresh);
    source.addEventListener("end", function () { refresh().then(stop); });
    source.onerror = poll;
  }

  document.addEventListener("visibilitychange", function () {
    if (ended()) { return; }
    if (document.visibilityState === "hidden") {
      if (source !== null) { source.close(); source = null; }
      if (poller !== null) { clearInterval(poller); poller = null; }
    } else if (source === null && poller === null) {
      refresh().then(function () { if (!ended()) { listen(); } });
    }
  });

  listen();
})();
