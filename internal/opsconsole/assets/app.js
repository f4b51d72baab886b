// The ops console's page: hash routes, JSON from /ops/api/, charts drawn as
// inline SVG. No dependencies, nothing loaded from elsewhere.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const view = document.getElementById("view");
  const colors = { ok: "#2e7d32", failed: "#c62828", deferred: "#ef6c00", allowed: "#2e7d32",
    denied: "#c62828", degraded: "#ef6c00", hit: "#2e7d32", stale: "#7b1fa2", computed: "#1565c0",
    error: "#c62828", "hit rate": "#2e7d32", pending: "#1565c0", published: "#2e7d32", errors: "#c62828", age: "#ef6c00" };
  let timer = null;
  let inflight = false;

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  function fmt(n) {
    if (n === undefined || n === null) return "–";
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return String(Math.round(n * 100) / 100);
  }
  function pct(x) { return (x * 100).toFixed(1) + "%"; }
  function when(t) { return t ? new Date(t).toLocaleString() : "–"; }
  function toast(msg) {
    const t = document.getElementById("toast");
    t.textContent = msg; t.className = "show";
    setTimeout(() => { t.className = ""; }, 3000);
  }

  async function api(path) {
    const r = await fetch("/ops/api/" + path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (r.status === 401) { location.href = "/ops/login"; throw new Error("signed out"); }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) { const e = new Error(body.error || r.statusText); e.status = r.status; throw e; }
    return body;
  }
  async function act(path, label) {
    const r = await fetch("/ops/api/" + path, { method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, Accept: "application/json" } });
    const body = await r.json().catch(() => ({}));
    toast(r.ok ? label + ": done" : label + ": " + (body.error || r.status));
    refresh();
  }
  function minutes() { return document.getElementById("window").value; }

  // chart draws stacked bars per minute for the named lines of s.
  function chart(s, names, opts) {
    opts = opts || {};
    const n = (s[names[0]] || []).length;
    const w = 600, h = 120, pad = 18;
    let max = 0;
    for (let i = 0; i < n; i++) {
      let sum = 0;
      for (const k of names) sum += Math.max(0, (s[k] || [])[i] || 0);
      max = Math.max(max, sum);
    }
    if (opts.max) max = opts.max;
    const bw = n ? (w - pad) / n : 0;
    let bars = "";
    let total = 0;
    for (let i = 0; i < n; i++) {
      let y = h - pad;
      for (const k of names) {
        const v = Math.max(0, (s[k] || [])[i] || 0);
        total += v;
        if (!v || !max) continue;
        const bh = (v / max) * (h - pad - 4);
        y -= bh;
        bars += `<rect x="${(pad + i * bw).toFixed(1)}" y="${y.toFixed(1)}" width="${Math.max(1, bw - 1).toFixed(1)}" height="${bh.toFixed(1)}" fill="${colors[k] || "#607d8b"}"><title>${esc(k)}: ${opts.pct ? pct(v) : fmt(v)}</title></rect>`;
      }
    }
    const legend = names.map((k) => `<span>${swatch(colors[k] || "#607d8b")}${esc(k)}</span>`).join("");
    // The scale is HTML: text inside a stretched SVG (preserveAspectRatio
    // none) would be squeezed on a narrow screen.
    return `<div class="chart-top">${esc(String(opts.top || fmt(max)))}</div>` +
      `<svg class="chart" viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img" data-total="${total}" aria-label="${esc(names.join(", "))}">` +
      `<line x1="${pad}" y1="${h - pad}" x2="${w}" y2="${h - pad}" stroke="#cbd5e1"/>${bars}</svg><div class="legend">${legend}</div>`;
  }
  // rateBars draws a 0..1 rate per minute as bars on a 0–100 % scale;
  // minutes without reads (negative) stay empty.
  function rateBars(vals) {
    return chart({ "hit rate": vals.map((v) => Math.max(0, v)) }, ["hit rate"], { max: 1, top: "100%", pct: true });
  }
  // swatch is a legend's colour key: an SVG fill, since the page's CSP
  // allows no inline style.
  function swatch(c) { return `<svg class="swatch" viewBox="0 0 10 10"><rect width="10" height="10" rx="2" fill="${c}"/></svg>`; }
  function tile(id, n, label, cls) {
    return `<div class="tile ${cls || ""}" id="${id}"><div class="n">${esc(n)}</div><div class="l">${esc(label)}</div></div>`;
  }
  function table(cols, rows, empty) {
    if (!rows.length) return `<div class="table-wrap"><div class="empty">${esc(empty)}</div></div>`;
    const head = cols.map((c) => `<th class="${c.num ? "num" : ""}">${esc(c.t)}</th>`).join("");
    return `<div class="table-wrap"><table><thead><tr>${head}</tr></thead><tbody>${rows.join("")}</tbody></table></div>`;
  }
  function unavailable(e) { return `<div class="table-wrap"><div class="empty">${esc(e.message)}</div></div>`; }
  async function maybe(p) { try { return await p; } catch (e) { if (e.message === "signed out") throw e; return e; } }

  const views = {
    async overview() {
      const [s, dlq] = await Promise.all([api("stats?minutes=" + minutes()), maybe(api("dlq"))]);
      const d = s.deliveries;
      const rate = d.total ? d.failed / d.total : 0;
      const inst = s.instances.length ? s.instances[s.instances.length - 1] || s.instances[s.instances.length - 2] || 0 : 0;
      const dead = Object.values(d.dead).reduce((a, b) => a + b, 0);
      const degraded = Object.entries(s.degraded).filter(([, v]) => v > 0);
      return `<h2>Overview</h2><div class="tiles">` +
        tile("t-deliveries", fmt(d.total), "deliveries") +
        tile("t-failed", fmt(d.failed), "failed deliveries", d.failed ? "bad" : "ok") +
        tile("t-error-rate", pct(rate), "delivery error rate", rate > 0.05 ? "bad" : "ok") +
        tile("t-dlq", dlq instanceof Error ? "–" : fmt(dlq.length), "in the DLQ", !(dlq instanceof Error) && dlq.length ? "bad" : "ok") +
        tile("t-dead", fmt(dead), "dead-lettered in the window (failure callbacks)") +
        tile("t-instances", fmt(inst), "instances reporting") +
        tile("t-degraded", fmt(degraded.reduce((a, [, v]) => a + v, 0)), "degraded decisions", degraded.length ? "warn" : "ok") +
        `</div><h2>Throughput</h2><div class="card" id="c-deliveries"><h3>Deliveries per minute</h3>${chart(d.perMinute, ["ok", "failed", "deferred"])}</div>` +
        `<h2>Degraded modes</h2>` +
        table([{ t: "part" }, { t: "decisions made without Redis", num: true }],
          degraded.map(([k, v]) => `<tr><td>${esc(k)}</td><td class="num">${fmt(v)}</td></tr>`), "None in this window.") +
        `<h2>Deliveries by job</h2>` + jobTotals(d);
    },
    async jobs() {
      const q = jobsFilter;
      const params = new URLSearchParams();
      if (q.state) params.set("state", q.state);
      if (q.job) params.set("job", q.job);
      const [ev, dlq, sch, qs] = await Promise.all([maybe(api("events?" + params)), maybe(api("dlq")), maybe(api("schedules")), maybe(api("queues"))]);
      let attempts = "";
      if (q.messageId) {
        const a = await maybe(api("events?messageId=" + encodeURIComponent(q.messageId)));
        attempts = `<h2>Attempts of <code>${esc(q.messageId)}</code></h2><div id="attempts">` + (a instanceof Error ? unavailable(a) : eventTable(a, "No events.")) + `</div>`;
      }
      const dlqHTML = dlq instanceof Error ? unavailable(dlq) : table(
        [{ t: "job" }, { t: "message" }, { t: "published" }, { t: "status", num: true }, { t: "" }],
        dlq.map((e) => `<tr data-dlq="${esc(e.dlqId)}"><td>${esc(e.job)}</td><td><a href="#jobs" data-msg="${esc(e.messageId)}"><code>${esc(e.messageId)}</code></a></td><td>${when(e.time)}</td><td class="num">${e.responseStatus || ""}</td>` +
          `<td><button class="retry" data-retry="${esc(e.dlqId)}">Retry</button> <button class="danger delete" data-delete="${esc(e.dlqId)}">Delete</button></td></tr>`),
        "The DLQ is empty.");
      const schHTML = sch instanceof Error ? unavailable(sch) : table([{ t: "schedule" }, { t: "cron" }, { t: "job" }, { t: "state" }],
        sch.map((s) => `<tr><td><code>${esc(s.id)}</code></td><td><code>${esc(s.cron)}</code></td><td>${esc(s.job)}</td><td>${s.paused ? '<span class="pill warn">paused</span>' : '<span class="pill ok">active</span>'}</td></tr>`), "No schedules.");
      const qHTML = qs instanceof Error ? unavailable(qs) : table([{ t: "queue" }, { t: "parallelism", num: true }, { t: "lag", num: true }, { t: "state" }, { t: "" }],
        qs.map((x) => `<tr data-queue="${esc(x.name)}"><td>${esc(x.name)}</td><td class="num">${x.parallelism}</td><td class="num">${x.lag}</td><td>${x.paused ? '<span class="pill warn">paused</span>' : '<span class="pill ok">running</span>'}</td>` +
          `<td>${x.paused ? `<button data-resume="${esc(x.name)}">Resume</button>` : `<button data-pause="${esc(x.name)}">Pause</button>`}</td></tr>`), "No queues.");
      return `<h2>Dead-letter queue</h2>${dlqHTML}${attempts}<h2>Recent events</h2>` +
        `<form class="filters" id="ev-filter"><select name="state"><option value="">any state</option>` +
        ["CREATED", "ACTIVE", "DELIVERED", "RETRY", "ERROR", "FAILED", "CANCELED"].map((s) => `<option ${q.state === s ? "selected" : ""}>${s}</option>`).join("") +
        `</select><input name="job" placeholder="job name" value="${esc(q.job || "")}"><button type="submit">Filter</button></form>` +
        (ev instanceof Error ? unavailable(ev) : eventTable(ev, "No events.")) +
        `<h2>Queues</h2>${qHTML}<h2>Schedules</h2>${schHTML}`;
    },
    async limits() {
      const [s, k] = await Promise.all([api("stats?minutes=" + minutes()), maybe(api("keys"))]);
      const cards = s.limits.map((b) => `<div class="card" data-bucket="${esc(b.tier + "/" + b.bucket)}"><h3>${esc(b.tier)} / ${esc(b.bucket)}</h3>` +
        `<div class="legend"><span>allowed <b class="allowed">${fmt(b.totals.allowed || 0)}</b></span><span>denied <b class="denied">${fmt(b.totals.denied || 0)}</b></span><span>degraded <b class="degraded">${fmt(b.totals.degraded || 0)}</b></span></div>` +
        chart(b.perMinute, ["allowed", "denied", "degraded"]) + `</div>`).join("");
      const top = k instanceof Error ? unavailable(k) : table([{ t: "tier" }, { t: "bucket" }, { t: "identity (HMAC)" }, { t: "count in window", num: true }],
        k.topLimited.map((x) => `<tr><td>${esc(x.tier)}</td><td>${esc(x.bucket)}</td><td><code>${esc(x.identity)}</code></td><td class="num">${fmt(x.count)}</td></tr>`), "No counters in the sample.");
      return `<h2>Rate limits per bucket</h2><div class="cards">${cards || '<div class="empty">No decisions in this window.</div>'}</div>` +
        `<h2>Most-limited identities (sampled)</h2>${top}`;
    },
    async cache() {
      const s = await api("stats?minutes=" + minutes());
      const cards = s.cache.map((f) => `<div class="card" data-family="${esc(f.family)}"><h3>${esc(f.family)} <span class="pill ${f.hitRate > 0.8 ? "ok" : "warn"}">hit rate <b class="hitrate">${pct(f.hitRate)}</b></span></h3>` +
        `<div class="legend">${["hit", "stale", "computed", "degraded", "error"].map((g) => `<span>${swatch(colors[g])}${g} <b class="${g}">${fmt(f.totals[g] || 0)}</b></span>`).join("")}</div>` +
        rateBars(f.hitRates) + `</div>`).join("");
      const idem = ["first", "replayed", "conflict", "mismatch", "ambiguous", "unavailable", "released", "invalid"];
      return `<h2>Cache hit rate per key family</h2><div class="cards">${cards || '<div class="empty">No cache reads in this window.</div>'}</div>` +
        `<h2>Idempotency keys</h2><div class="tiles">${idem.map((o) => tile("t-idem-" + o, fmt(s.idempotency[o] || 0), o, o === "unavailable" && s.idempotency[o] ? "warn" : "")).join("")}</div>`;
    },
    async keys() {
      const k = await api("keys");
      const buckets = ["none", "<1m", "<1h", "<1d", ">=1d"];
      const ttlColors = { none: "#607d8b", "<1m": "#c62828", "<1h": "#ef6c00", "<1d": "#1565c0", ">=1d": "#2e7d32" };
      const rows = k.prefixes.map((p) => {
        let x = 0, bar = "";
        for (const b of buckets) {
          const v = p.ttl[b] || 0;
          if (!v) continue;
          const wd = (v / p.count) * 100;
          bar += `<rect x="${x}" y="0" width="${wd}" height="10" fill="${ttlColors[b]}"><title>${b}: ${v}</title></rect>`;
          x += wd;
        }
        return `<tr data-prefix="${esc(p.prefix)}"><td><code>${esc(p.prefix)}</code></td><td class="num">${fmt(p.count)}</td>` +
          buckets.map((b) => `<td class="num">${p.ttl[b] || 0}</td>`).join("") +
          `<td class="spread"><svg viewBox="0 0 100 10" preserveAspectRatio="none">${bar}</svg></td></tr>`;
      });
      return `<h2>Redis keys per prefix</h2><p class="muted">A sample of ${fmt(k.sampled)} keys (SCAN${k.complete ? ", every key seen" : ", stopped at the limit"}); TTL is the time left.</p>` +
        table([{ t: "prefix" }, { t: "keys", num: true }].concat(buckets.map((b) => ({ t: "TTL " + b, num: true }))).concat([{ t: "spread" }]), rows, "No keys.");
    },
    async outbox() {
      const s = await api("stats?minutes=" + minutes());
      const o = s.outbox;
      if (!o.seen) return `<h2>Outbox</h2><div class="table-wrap"><div class="empty">No process reports an outbox relay (the in-memory store publishes directly).</div></div>`;
      const last = (a) => { for (let i = a.length - 1; i >= 0; i--) if (a[i]) return a[i]; return 0; };
      return `<h2>Outbox</h2><div class="tiles">${tile("t-outbox-pending", fmt(last(o.pending)), "pending")}${tile("t-outbox-age", fmt(last(o.oldestAge)) + " s", "oldest pending", last(o.oldestAge) > 60 ? "bad" : "ok")}${tile("t-outbox-failed", fmt(last(o.failed)), "given up", last(o.failed) ? "bad" : "ok")}</div>` +
        `<div class="cards"><div class="card"><h3>Published per minute</h3>${chart({ published: o.published, errors: o.errors }, ["published", "errors"])}</div>` +
        `<div class="card"><h3>Pending</h3>${chart({ pending: o.pending }, ["pending"])}</div><div class="card"><h3>Oldest pending (s)</h3>${chart({ age: o.oldestAge }, ["age"])}</div></div>`;
    },
  };
  let jobsFilter = {};

  function jobTotals(d) {
    const rows = Object.entries(d.totals).sort().map(([job, o]) => {
      const tot = Object.values(o).reduce((a, b) => a + b, 0);
      const detail = Object.entries(o).sort().map(([k, v]) => `${esc(k)} ${fmt(v)}`).join(", ");
      return `<tr data-job="${esc(job)}"><td>${esc(job)}</td><td class="num">${fmt(tot)}</td><td class="num">${fmt(d.dead[job] || 0)}</td><td>${detail}</td></tr>`;
    });
    return table([{ t: "job" }, { t: "deliveries", num: true }, { t: "dead", num: true }, { t: "by outcome" }], rows, "No deliveries in this window.");
  }
  function eventTable(ev, empty) {
    return table([{ t: "time" }, { t: "state" }, { t: "job" }, { t: "message" }, { t: "status", num: true }],
      ev.map((e) => `<tr><td>${when(e.time)}</td><td><span class="pill ${esc(e.state)}">${esc(e.state)}</span></td><td>${esc(e.job)}</td>` +
        `<td><a href="#jobs" data-msg="${esc(e.messageId)}"><code>${esc(e.messageId)}</code></a></td><td class="num">${e.responseStatus || ""}</td></tr>`), empty);
  }

  async function refresh() {
    if (inflight) return;
    inflight = true;
    const name = (location.hash || "#overview").slice(1);
    const render = views[name] || views.overview;
    document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === name));
    try {
      const html = await render();
      // Keep a half-typed filter: only redraw when nothing has focus in it.
      if (!(document.activeElement && document.activeElement.form && document.activeElement.form.id === "ev-filter")) {
        view.innerHTML = html;
        view.dataset.view = name;
        view.dataset.loaded = String(Date.now());
      }
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (e.message !== "signed out") view.innerHTML = `<div class="table-wrap"><div class="empty error">${esc(e.message)}</div></div>`;
    } finally {
      inflight = false;
    }
  }
  function schedule() {
    clearInterval(timer);
    if (document.getElementById("auto").checked) timer = setInterval(refresh, 5000);
  }

  view.addEventListener("click", (ev) => {
    const t = ev.target.closest("button, a[data-msg]");
    if (!t) return;
    if (t.dataset.msg) { ev.preventDefault(); jobsFilter.messageId = t.dataset.msg; location.hash = "#jobs"; refresh(); return; }
    if (t.dataset.retry) act("dlq/" + encodeURIComponent(t.dataset.retry) + "/retry", "retry");
    else if (t.dataset.delete && confirm("Delete this dead job for good?")) act("dlq/" + encodeURIComponent(t.dataset.delete) + "/delete", "delete");
    else if (t.dataset.pause) act("queues/" + encodeURIComponent(t.dataset.pause) + "/pause", "pause");
    else if (t.dataset.resume) act("queues/" + encodeURIComponent(t.dataset.resume) + "/resume", "resume");
  });
  view.addEventListener("submit", (ev) => {
    if (ev.target.id !== "ev-filter") return;
    ev.preventDefault();
    const f = new FormData(ev.target);
    jobsFilter = { state: f.get("state"), job: f.get("job").trim() };
    document.activeElement.blur();
    refresh();
  });
  document.getElementById("auto").addEventListener("change", schedule);
  document.getElementById("window").addEventListener("change", refresh);
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/ops/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
    location.href = "/ops/login";
  });
  window.addEventListener("hashchange", refresh);
  refresh();
  schedule();
})();
