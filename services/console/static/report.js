// The TKS's monthly report form: a draft is kept on the device as it is typed; a submitted
// report waits in an outbox (localStorage) until the console answers, with the idempotency key
// made when it was first submitted, so sending it again after a dropped connection files it once.
(function () {
  "use strict";
  var OUTBOX = "tkm-report-outbox";
  var words = document.getElementById("words").dataset;
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var status = document.getElementById("outbox-status");
  var sending = false;

  function key() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function load(name, fallback) {
    try { return JSON.parse(localStorage.getItem(name)) || fallback; } catch (e) { return fallback; }
  }
  function save(name, value) { localStorage.setItem(name, JSON.stringify(value)); }
  function draftName(form) { return "tkm-report-draft:" + form.dataset.group + ":" + form.dataset.period; }
  function formOf(group) { return document.querySelector('form.report[data-group="' + group + '"]'); }

  function read(form) {
    var data = { group_id: form.dataset.group, period: form.dataset.period, support: [] };
    ["revenue", "production_units", "members_active", "new_workers"].forEach(function (n) {
      data[n] = parseInt(form.elements[n].value || "0", 10);
    });
    data.production_unit = form.elements.production_unit.value;
    data.problems = form.elements.problems.value;
    data.lpj_help = form.elements.lpj_help.checked;
    form.querySelectorAll('input[name="support"]:checked').forEach(function (c) { data.support.push(c.value); });
    return data;
  }
  function fill(form, data) {
    ["revenue", "production_units", "members_active", "new_workers", "production_unit", "problems"].forEach(function (n) {
      if (data[n] !== undefined && data[n] !== null) form.elements[n].value = data[n];
    });
    form.elements.lpj_help.checked = !!data.lpj_help;
    form.querySelectorAll('input[name="support"]').forEach(function (c) {
      c.checked = (data.support || []).indexOf(c.value) >= 0;
    });
  }
  function say(form, text) {
    if (form) form.querySelector(".result").textContent = text;
  }
  function showOutbox() {
    var waiting = load(OUTBOX, []).length;
    status.textContent = waiting ? words.pending + ": " + waiting : "";
  }

  function flush() {
    var box = load(OUTBOX, []);
    if (sending || !box.length) { showOutbox(); return; }
    sending = true;
    var item = box[0];
    fetch("/api/reports", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(item)
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        var form = formOf(item.group_id);
        var rest = load(OUTBOX, []).filter(function (x) { return x.idempotency_key !== item.idempotency_key; });
        if (response.ok) {
          save(OUTBOX, rest);
          localStorage.removeItem("tkm-report-draft:" + item.group_id + ":" + item.period);
          say(form, words.sent);
          if (form) { form.classList.add("sent"); form.querySelector("button[type=submit]").disabled = true; }
        } else if (response.status === 401 || response.status === 403 || response.status >= 500 ||
                   (response.status === 409 && /progress/.test(body.message || ""))) {
          throw new Error("retry later");  // signed out, or the service is busy: keep it
        } else {
          save(OUTBOX, rest);  // refused for good: the draft stays in the form to correct
          say(form, words.refused + ": " + (body.message || response.status));
        }
      });
    }).then(function () {
      sending = false;
      showOutbox();
      if (load(OUTBOX, []).length) flush();
    }, function () {
      sending = false;
      say(formOf(item.group_id), words.queued);
      showOutbox();
    });
  }

  document.querySelectorAll("form.report").forEach(function (form) {
    var draft = load(draftName(form), null);
    if (draft) { fill(form, draft); form.querySelector(".draft").hidden = false; }
    form.addEventListener("input", function () {
      save(draftName(form), read(form));
      form.querySelector(".draft").hidden = false;
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!form.reportValidity()) return;
      var data = read(form);
      var box = load(OUTBOX, []);
      var queued = box.filter(function (x) { return x.group_id === data.group_id && x.period === data.period; })[0];
      data.idempotency_key = queued ? queued.idempotency_key : key();
      box = box.filter(function (x) { return x !== queued; });
      box.push(data);
      save(OUTBOX, box);
      save(draftName(form), data);
      if (!navigator.onLine) { say(form, words.queued); showOutbox(); return; }
      flush();
    });
  });

  window.addEventListener("online", flush);
  setInterval(flush, 4000);
  flush();
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(function () {});
  }
})();
