// ARX workforce console: the little that needs a script. Every page works
// without it; with it, live pages refresh their [data-live] regions when the
// server sends an event, countdowns tick, and times show in local time.
(function () {
  "use strict";

  var announcer = document.getElementById("announcer");

  function announce(text) {
    if (!announcer || !text) return;
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 50);
  }

  // Times: <time datetime data-local> in the reader's time zone,
  // <time datetime data-ago> as "3 min ago".
  var dateFormat = null, preciseFormat = null;
  try {
    dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
    preciseFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  } catch (e) { /* old browser: keep the server's UTC text */ }

  function localTimes(root) {
    if (!dateFormat) return;
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      var f = el.getAttribute("data-local") === "seconds" ? preciseFormat : dateFormat;
      el.textContent = f.format(d);
      el.title = d.toISOString();
    });
  }

  function ago(ms) {
    var s = Math.floor(ms / 1000);
    if (s < 10) return "just now";
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 172800) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " days ago";
  }

  function left(ms) {
    if (ms <= 0) return "expired";
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
    s = s % 60;
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (h > 0) return h + "h " + two(m) + "m left";
    if (m > 0) return m + "m " + two(s) + "s left";
    return s + "s left";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      var ms = new Date(el.getAttribute("data-expires")).getTime() - now;
      if (isNaN(ms)) return;
      var text = left(ms);
      if (el.textContent !== text) el.textContent = text;
      el.classList.toggle("is-urgent", ms > 0 && ms < 60000);
      el.classList.toggle("is-over", ms <= 0);
    });
    document.querySelectorAll("time[data-ago]").forEach(function (el) {
      var t = new Date(el.getAttribute("datetime")).getTime();
      if (!isNaN(t)) el.textContent = ago(now - t);
    });
  }

  // The decision form: a denial needs a reason, said before the round trip.
  function decisionForms(root) {
    root.querySelectorAll("form[data-decision-form]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      var reason = form.querySelector("textarea[name=reason]");
      var error = form.querySelector("#reason-error");
      form.addEventListener("submit", function (ev) {
        var btn = ev.submitter;
        if (btn && btn.value === "deny" && reason && reason.value.trim() === "") {
          ev.preventDefault();
          if (error) error.hidden = false;
          reason.setAttribute("aria-invalid", "true");
          reason.setAttribute("aria-describedby", "reason-error reason-help");
          reason.focus();
          return;
        }
        if (form.dataset.passkey && !form.dataset.signed) {
          ev.preventDefault();
          signDecision(form, btn);
          return;
        }
        form.dataset.submitting = "1";
      });
      if (reason) {
        reason.addEventListener("input", function () {
          if (error && reason.value.trim() !== "") {
            error.hidden = true;
            reason.removeAttribute("aria-invalid");
          }
        });
      }
    });
  }

  // Passkeys (WebAuthn). The server speaks base64url; the browser
  // ArrayBuffers.
  function fromB64(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function toB64(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function credentialJSON(cred) {
    var r = cred.response, out = { id: cred.id, rawId: toB64(cred.rawId), type: cred.type,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      response: { clientDataJSON: toB64(r.clientDataJSON) } };
    if (cred.authenticatorAttachment) out.authenticatorAttachment = cred.authenticatorAttachment;
    if (r.attestationObject) {
      out.response.attestationObject = toB64(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = toB64(r.authenticatorData);
      out.response.signature = toB64(r.signature);
      if (r.userHandle) out.response.userHandle = toB64(r.userHandle);
    }
    return JSON.stringify(out);
  }

  // post sends form fields with the session's CSRF token and reads JSON.
  function post(url, form, fields) {
    var body = new URLSearchParams();
    body.set("csrf", form.querySelector("input[name=csrf]").value);
    Object.keys(fields).forEach(function (k) { body.set(k, fields[k]); });
    return fetch(url, { method: "POST", body: body, credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (j) {
          if (!res.ok) {
            var e = j && j.error ? j.error : { message: "The server answered " + res.status + "." };
            throw new Error(e.message + (e.hint ? " (" + e.hint + ")" : ""));
          }
          return j;
        });
      });
  }

  function ceremonyError(err) {
    if (err && err.name === "NotAllowedError") return "The passkey prompt was cancelled or timed out. Try again.";
    if (err && err.name === "InvalidStateError") return "This authenticator already holds one of your passkeys.";
    return (err && err.message) || "Something went wrong with the passkey.";
  }

  function showError(el, text) {
    if (!el) return;
    var slot = el.querySelector("[data-message]") || el;
    slot.textContent = text;
    el.hidden = false;
    if (el.focus) el.focus();
    announce(text);
  }

  function signDecision(form, btn) {
    var decision = btn ? btn.value : "approve";
    var reason = form.querySelector("textarea[name=reason]");
    var error = form.querySelector("#passkey-error");
    if (error) error.hidden = true;
    if (!window.PublicKeyCredential) {
      showError(error, "This browser cannot use passkeys; decide in a browser that can.");
      return;
    }
    form.setAttribute("aria-busy", "true");
    post(form.dataset.challenge, form, { decision: decision, reason: reason ? reason.value : "" })
      .then(function (ch) {
        var pk = ch.publicKey;
        pk.challenge = fromB64(pk.challenge);
        (pk.allowCredentials || []).forEach(function (c) { c.id = fromB64(c.id); });
        return navigator.credentials.get({ publicKey: pk }).then(function (cred) {
          form.querySelector("input[name=decided_at]").value = ch.decided_at;
          form.querySelector("input[name=assertion]").value = credentialJSON(cred);
          form.dataset.signed = "1";
          form.removeAttribute("aria-busy");
          form.requestSubmit(btn);
        });
      })
      .catch(function (err) {
        form.removeAttribute("aria-busy");
        showError(error, ceremonyError(err));
      });
  }

  function bindPasskeyRegister(root) {
    root.querySelectorAll("form[data-passkey-register]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      var error = document.getElementById("passkey-error");
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        if (error) error.hidden = true;
        if (!window.PublicKeyCredential) {
          showError(error, "This browser cannot use passkeys.");
          return;
        }
        var name = form.querySelector("input[name=name]");
        form.setAttribute("aria-busy", "true");
        post(form.action, form, { name: name ? name.value : "" })
          .then(function (opts) {
            var pk = opts.publicKey;
            pk.challenge = fromB64(pk.challenge);
            pk.user.id = fromB64(pk.user.id);
            (pk.excludeCredentials || []).forEach(function (c) { c.id = fromB64(c.id); });
            return navigator.credentials.create({ publicKey: pk });
          })
          .then(function (cred) {
            return post("/console/passkeys/finish", form, { credential: credentialJSON(cred) });
          })
          .then(function () { window.location.assign("/console/passkeys?done=added"); })
          .catch(function (err) {
            form.removeAttribute("aria-busy");
            showError(error, ceremonyError(err));
          });
      });
    });
  }

  // Live regions: fetch this page again and swap in each [data-live]
  // element by id. A region holding a form the person is filling in is
  // kept while it still has that form.
  var refreshing = false, again = false;

  function keepRegion(oldEl, newEl) {
    if (!oldEl.hasAttribute("data-live-keep-form")) return false;
    var form = oldEl.querySelector("form");
    if (!form || !newEl.querySelector("form")) return false;
    if (form.dataset.submitting) return true;
    var typed = Array.prototype.some.call(form.querySelectorAll("textarea, input[type=text]"), function (f) {
      return f.value !== f.defaultValue;
    });
    return typed || oldEl.contains(document.activeElement);
  }

  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (res) {
        if (res.redirected && res.url.indexOf("/console/login") >= 0) {
          window.location.reload();
          return null;
        }
        return res.ok ? res.text() : null;
      })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var known = {};
        document.querySelectorAll(".request[data-call]").forEach(function (el) { known[el.dataset.call] = true; });
        document.querySelectorAll("[data-live][id]").forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (!fresh || keepRegion(el, fresh)) return;
          if (el.innerHTML === fresh.innerHTML) return;
          el.innerHTML = fresh.innerHTML;
          localTimes(el);
          decisionForms(el);
        });
        var news = [];
        document.querySelectorAll(".request[data-call]").forEach(function (el) {
          if (!known[el.dataset.call]) {
            el.classList.add("is-new");
            news.push(el.getAttribute("data-announce"));
          }
        });
        if (news.length === 1) announce(news[0]);
        else if (news.length > 1) announce(news.length + " new requests are waiting for a decision.");
        tick();
      })
      .catch(function () { /* the next event or reconnect tries again */ })
      .then(function () {
        refreshing = false;
        if (again) { again = false; refresh(); }
      });
  }

  var pending = null;
  function soon() {
    if (pending) return;
    pending = window.setTimeout(function () { pending = null; refresh(); }, 60);
  }

  function setLive(on) {
    document.body.setAttribute("data-live-state", on ? "on" : "off");
    document.querySelectorAll("[data-live-indicator]").forEach(function (el) {
      el.classList.toggle("is-on", on);
      el.classList.toggle("is-off", !on);
      var text = el.querySelector(".live-text");
      if (text) text.textContent = on ? "Live updates" : "Reconnecting…";
    });
  }

  var retryDelay = 2000;

  function listen(url, reconnected) {
    if (!window.EventSource) return;
    var es = new EventSource(url);
    var connectedOnce = !!reconnected;
    es.addEventListener("open", function () {
      setLive(true);
      retryDelay = 2000;
      // After a reconnect, events may have been missed: catch up.
      if (connectedOnce) soon();
      connectedOnce = true;
    });
    es.addEventListener("error", function () {
      setLive(false);
      if (es.readyState !== EventSource.CLOSED) return; // the browser retries by itself
      // Refused (the session ended?) or the server is away: look at the
      // page again (a sign-in page reloads it), then listen anew.
      es.close();
      soon();
      window.setTimeout(function () { listen(url, true); }, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 60000);
    });
    ["approval.requested", "approval.decided", "resync"].forEach(function (type) {
      es.addEventListener(type, soon);
    });
    window.addEventListener("pagehide", function () { es.close(); });
  }

  function start() {
    localTimes(document);
    decisionForms(document);
    bindPasskeyRegister(document);
    tick();
    window.setInterval(tick, 1000);
    var events = document.body.getAttribute("data-events");
    if (events) listen(events);
    var refusal = document.getElementById("refusal");
    if (refusal) refusal.focus();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
