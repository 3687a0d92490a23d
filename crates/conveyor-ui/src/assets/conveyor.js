// Conveyor's one script. Every page and form works without it; it adds live updates (the page's
// <main> fetched again when an event about it is appended), live logs, and confirmations.
"use strict";
(function () {
  // Sign-in link from the demo: /sign-in#token=… (a fragment never reaches the server's logs).
  var signIn = document.getElementById("sign-in");
  // Someone signed in already is asked first: a link with another's token must not switch
  // accounts behind their back.
  if (signIn && location.hash.indexOf("#token=") === 0) {
    signIn.elements.token.value = decodeURIComponent(location.hash.slice(7));
    history.replaceState(null, "", location.pathname + location.search);
    var current = signIn.getAttribute("data-signed-in");
    if (!current || window.confirm("You are signed in as " + current + ". Sign in with this link's token instead?")) {
      signIn.submit();
    }
    return;
  }

  // Confirmations: a form with data-confirm asks first; the server asks again without JS.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    var question = form.getAttribute("data-confirm");
    if (!question) return;
    if (!window.confirm(question)) { e.preventDefault(); return; }
    var confirmed = document.createElement("input");
    confirmed.type = "hidden"; confirmed.name = "confirmed"; confirmed.value = "yes";
    form.appendChild(confirmed);
  });

  // Live logs: lines from the run's log stream, filtered by the search box, following the end.
  // The log's section is kept when the page refreshes, so its box and its stream stay.
  function matches(span) {
    var filter = document.getElementById("log-filter");
    var text = filter && filter.value.toLowerCase();
    return !text || span.textContent.toLowerCase().indexOf(text) >= 0;
  }
  function startLog(pre) {
    var source = new EventSource(pre.getAttribute("data-stream"));
    source.addEventListener("line", function (e) {
      var line = JSON.parse(e.data);
      if (pre.getAttribute("data-loaded") === "0") { pre.textContent = ""; pre.setAttribute("data-loaded", "1"); }
      var span = document.createElement("span");
      span.className = line.stream;
      var t = document.createElement("span");
      t.className = "t";
      t.textContent = line.t.slice(11, 19) + " " + line.job + "#" + line.step + " ";
      span.appendChild(t);
      span.appendChild(document.createTextNode(line.line + "\n"));
      if (!matches(span)) span.classList.add("hidden");
      pre.appendChild(span);
      var follow = document.getElementById("log-follow");
      if (!follow || follow.checked) pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener("end", function () {
      source.close();
      pre.setAttribute("data-ended", "1");
      if (pre.getAttribute("data-loaded") === "0") pre.textContent = "(no output)";
    });
  }
  document.addEventListener("input", function (e) {
    if (e.target.id !== "log-filter") return;
    var pre = document.getElementById("log");
    Array.prototype.forEach.call(pre ? pre.children : [], function (span) {
      span.classList.toggle("hidden", !matches(span));
    });
  });

  // Live pages: <main data-live="run:5 project:shop"> is fetched again (at most once a second)
  // when an event with one of those topics is appended; "*" follows every event.
  var main = document.querySelector("main[data-live]");
  function keep(fresh) {
    // Parts marked data-keep (the log with its stream and search box) stay as they are.
    Array.prototype.forEach.call(fresh.querySelectorAll("[data-keep][id]"), function (part) {
      var old = document.getElementById(part.id);
      if (old) part.replaceWith(old);
    });
  }
  function busy() {
    var active = document.activeElement;
    return active && main.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
  }
  if (main) {
    var topics = main.getAttribute("data-live").split(" ");
    var due = null, last = 0;
    var refresh = function () {
      due = null;
      if (busy()) { due = setTimeout(refresh, 1000); return; }
      last = Date.now();
      fetch(location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
          if (!fresh) return;
          keep(fresh);
          main.replaceChildren.apply(main, Array.prototype.slice.call(fresh.childNodes));
          main.setAttribute("data-refreshed", String(last));
        });
    };
    // From the log's head when the page was read (and, reconnecting, from the last event seen).
    var live = new EventSource("/live?after=" + encodeURIComponent(main.getAttribute("data-seq") || "0"));
    live.addEventListener("change", function (e) {
      var about = JSON.parse(e.data).topics;
      var relevant = topics.indexOf("*") >= 0 || about.some(function (t) { return topics.indexOf(t) >= 0; });
      if (!relevant || due) return;
      due = setTimeout(refresh, Math.max(150, 1000 - (Date.now() - last)));
    });
  }
  var pre = document.querySelector("pre[data-stream]");
  if (pre) startLog(pre);
})();
