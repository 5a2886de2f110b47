// chiso console: keeps a page current without reloading it. It listens to /console/events
// (server-sent events keyed on the build id); when a build publishes, it fetches the page
// again and replaces only the parts ([data-part]) whose content changed. It also counts the
// data's age up, and submits the period picker when it changes.
(function () {
  "use strict";
  var body = document.body;
  var loadedAt = Date.now();
  var seen = {};
  function remember(root) {
    root.querySelectorAll("[data-part]").forEach(function (el) {
      seen[el.getAttribute("data-part")] = el.innerHTML;
    });
  }
  remember(document);

  function showAge() {
    var el = document.getElementById("data-age");
    var base = body.getAttribute("data-age");
    if (!el || base === "") return;
    var s = parseInt(base, 10) + Math.floor((Date.now() - loadedAt) / 1000);
    var text;
    if (s < 90) text = s + " giây";
    else if (s < 5400) text = Math.round(s / 60) + " phút";
    else if (s < 172800) text = Math.round(s / 3600) + " giờ";
    else text = Math.round(s / 86400) + " ngày";
    el.textContent = "Dữ liệu cách đây " + text;
    el.classList.toggle("stale", s > 3600);
  }
  showAge();
  setInterval(showAge, 1000);

  var refreshing = false;
  var again = false;
  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        // Sent to sign in (the token changed): show that page rather than keep stale numbers.
        if (r.redirected) { location.reload(); throw new Error("signed out"); }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var replaced = [];
        doc.querySelectorAll("[data-part]").forEach(function (fresh) {
          var name = fresh.getAttribute("data-part");
          var here = document.querySelector('[data-part="' + name + '"]');
          if (!here || seen[name] === fresh.innerHTML) return;
          here.innerHTML = fresh.innerHTML;
          seen[name] = fresh.innerHTML;
          replaced.push(name);
        });
        ["data-build", "data-age"].forEach(function (a) {
          body.setAttribute(a, doc.body.getAttribute(a) || "");
        });
        var title = doc.getElementById("data-age");
        var here = document.getElementById("data-age");
        if (title && here) here.title = title.title;
        loadedAt = Date.now();
        showAge();
        body.setAttribute("data-refreshed", String(Date.now()));
        body.setAttribute("data-replaced", replaced.join(" "));
      })
      .catch(function () { /* the next event or tick tries again */ })
      .then(function () {
        refreshing = false;
        if (again) { again = false; refresh(); }
      });
  }

  // The page shows one period: the address names it, so that a refresh after a build that
  // opened a new month keeps showing the one on the screen.
  var picker = document.getElementById("period");
  if (picker && picker.value && !/[?&]period=/.test(location.search)) {
    var u = new URL(location.href);
    u.searchParams.set("period", picker.value);
    history.replaceState(null, "", u.toString());
  }

  // Until the page shows the build the server announced, try again every few seconds (a
  // refresh may meet a busy server).
  var wanted = null;
  setInterval(function () {
    if (wanted && wanted !== body.getAttribute("data-build")) setTimeout(refresh, Math.random() * 1000);
  }, 3000);

  // One stream per visible page: a hidden tab lets go of its connection (a browser keeps
  // six per server) and asks again when it is shown; the first event says the build now.
  var events = null;
  function listen() {
    if (events || !window.EventSource || document.hidden) return;
    events = new EventSource("/console/events");
    events.addEventListener("build", function (e) {
      var mark;
      try { mark = JSON.parse(e.data); } catch (err) { return; }
      if (mark.build_id && mark.build_id !== body.getAttribute("data-build")) {
        wanted = mark.build_id;
        // Spread out: every open page hears of the build at the same moment.
        setTimeout(refresh, Math.random() * 400);
      }
    });
  }
  document.addEventListener("visibilitychange", function () {
    if (document.hidden && events) { events.close(); events = null; } else { listen(); }
  });
  listen();
  var every = parseInt(body.getAttribute("data-refresh-every") || "0", 10);
  if (every > 0) setInterval(refresh, every * 1000);

  document.querySelectorAll("select[data-autosubmit]").forEach(function (s) {
    s.addEventListener("change", function () { s.form.submit(); });
  });
})();
