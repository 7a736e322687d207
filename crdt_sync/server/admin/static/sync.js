// The sync page: every figure and action through the documented admin API (docs/REST.md,
// "Sync management"), called through api.js with the session cookie and its CSRF token.
// Values from the server only ever reach the page as text (textContent), never as HTML.
"use strict";

(function () {
  const API = "/api/admin";
  const REFRESH_MS = 2000; // lag and outbox depths change without an event: looked at again
  const ACTIVITY_KEPT = 200; // entries shown; older ones leave the list
  const $ = (id) => document.getElementById(id);

  // The panel's API client (api.js), failing with the server's message.
  async function call(method, path, body) {
    const answer = await crdtSync.call(method, API + path, body);
    if (!answer.ok) throw new Error(crdtSync.errorMessage(answer));
    return answer.body;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "–" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function button(label, className, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    if (className) b.className = className;
    b.addEventListener("click", onClick);
    return b;
  }

  function when(seconds) {
    if (seconds === null || seconds === undefined) return null;
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return null;
    const s = Math.max(0, Date.now() / 1000 - seconds);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    return `${Math.round(s / 3600)} h ago`;
  }

  function fill(tbody, rows, make) {
    const fresh = document.createDocumentFragment();
    for (const item of rows) fresh.appendChild(make(item));
    tbody.replaceChildren(fresh);
  }

  function say(id, text, bad) {
    const element = $(id);
    element.textContent = text;
    element.classList.toggle("problem", Boolean(bad));
  }

  // -- overview, clients, devices, refusals, tokens -----------------------------------------

  async function refreshOverview() {
    const o = await call("GET", "/sync/overview");
    $("fig-cursor").textContent = o.cursor;
    $("fig-log").textContent = o.log_entries;
    $("fig-debt").textContent = o.compaction_debt;
    const sockets = Object.entries(o.connections).map(([t, n]) => `${n} /${t}`);
    $("fig-connections").textContent = sockets.length ? sockets.join(", ") : "0";
    $("fig-rest").textContent = o.rest_devices;
  }

  async function refreshClients() {
    const answer = await call("GET", "/sync/clients");
    fill($("clients").tBodies[0], answer.live, (c) => {
      const row = document.createElement("tr");
      row.dataset.id = c.id;
      row.dataset.token = c.token;
      cell(row, c.token);
      cell(row, c.role);
      cell(row, c.transport === "ws" ? "/ws" : "/yjs", "transport");
      cell(row, c.client_id || null);
      cell(row, when(c.connected_since));
      cell(row, c.cursor);
      cell(row, c.behind, "behind");
      cell(row, ago(c.last_sync));
      cell(row, c.outbox);
      const actions = cell(row, "");
      actions.textContent = "";
      actions.appendChild(
        button("Disconnect", "danger", () => disconnect(c).catch(problem)),
      );
      return row;
    });
    fill($("rest-devices").tBodies[0], answer.rest, (d) => {
      const row = document.createElement("tr");
      cell(row, d.token);
      cell(row, d.client_id);
      cell(row, d.cursor);
      cell(row, d.behind, "behind");
      cell(row, ago(d.last_pull));
      cell(row, d.pulls);
      return row;
    });
  }

  async function refreshRefusals() {
    const answer = await call("GET", "/sync/refusals?limit=50");
    $("fig-refused").textContent = answer.total;
    fill($("refusals").tBodies[0], answer.refusals, (r) => {
      const row = document.createElement("tr");
      cell(row, when(r.at));
      cell(row, r.doc || null, "doc");
      cell(row, r.origin, "origin");
      cell(row, `${r.code}: ${r.reason}`, "reason");
      cell(row, r.values === null ? "unknown" : JSON.stringify(r.values), "values");
      return row;
    });
  }

  async function refreshTokens() {
    const tokens = await call("GET", "/tokens");
    fill($("tokens").tBodies[0], tokens, (t) => {
      const row = document.createElement("tr");
      row.dataset.name = t.name;
      if (t.revoked_at !== null) row.className = "revoked";
      cell(row, t.name);
      cell(row, t.role);
      cell(row, when(t.created_at));
      cell(row, t.revoked_at === null ? "" : when(t.revoked_at), "revoked-at");
      const actions = cell(row, "");
      if (t.revoked_at === null) {
        actions.appendChild(button("Revoke", "danger", () => revoke(t.name).catch(problem)));
      }
      return row;
    });
  }

  // -- charts: plain SVG polylines ----------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";

  function chart(id, values, nowId, unit) {
    const svg = $(id);
    const width = 300;
    const height = 80;
    const top = Math.max(1, ...values);
    const step = values.length > 1 ? width / (values.length - 1) : width;
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 4 - (v / top) * (height - 8)).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    const scale = document.createElementNS(SVG, "text");
    scale.setAttribute("x", "2");
    scale.setAttribute("y", "10");
    scale.textContent = `max ${Math.round(top * 10) / 10}`;
    svg.replaceChildren(line, scale);
    const last = values.length ? values[values.length - 1] : 0;
    $(nowId).textContent = `${Math.round(last * 10) / 10}${unit}`;
  }

  async function refreshCharts() {
    const series = await call("GET", "/sync/rates?seconds=300");
    const samples = series.samples;
    chart("chart-updates", samples.map((s) => s.updates_per_s), "now-updates", "/s");
    chart(
      "chart-connections",
      samples.map((s) => Object.values(s.connections).reduce((a, b) => a + b, 0)),
      "now-connections",
      "",
    );
    chart("chart-refusals", samples.map((s) => s.refusals_per_s), "now-refusals", "/s");
  }

  // -- the live activity log ----------------------------------------------------------------

  let stream = null;

  function activityQuery() {
    const form = new FormData($("activity-filters"));
    const query = new URLSearchParams();
    for (const key of ["record", "device", "kind"]) {
      const value = String(form.get(key) || "").trim();
      if (value) query.set(key, value);
    }
    return query;
  }

  function showActivity(entry) {
    const list = $("activity");
    const item = document.createElement("li");
    item.className = `activity-${entry.kind}`;
    const time = document.createElement("time");
    time.textContent = when(entry.at);
    const kind = document.createElement("b");
    kind.textContent = entry.kind;
    const text = document.createElement("span");
    const about = [entry.doc, entry.device].filter(Boolean).join(" · ");
    text.textContent = `${about ? about + " — " : ""}${entry.summary}`;
    item.append(time, " ", kind, " ", text);
    list.prepend(item);
    while (list.children.length > ACTIVITY_KEPT) list.lastElementChild.remove();
  }

  async function startActivity() {
    if (stream !== null) stream.close();
    const query = activityQuery();
    query.set("limit", "50");
    const page = await call("GET", `/sync/activity?${query}`);
    $("activity").replaceChildren();
    page.entries.forEach(showActivity);
    query.delete("limit");
    query.set("after", String(page.next));
    stream = new EventSource(`${API}/sync/activity/stream?${query}`);
    stream.addEventListener("open", () => {
      say("activity-state", "live");
      $("activity-state").dataset.state = "live";
    });
    stream.addEventListener("error", () => {
      say("activity-state", "reconnecting…");
      $("activity-state").dataset.state = "reconnecting";
    });
    stream.addEventListener("gap", () => say("activity-state", "some entries were skipped"));
    stream.addEventListener("activity", (event) => {
      const entry = JSON.parse(event.data);
      showActivity(entry);
      soon(entry.kind);
    });
  }

  // What an event makes worth looking at again, at most once a REFRESH_MS / 4.
  const due = new Set();
  let dueTimer = null;
  function soon(kind) {
    if (kind === "refusal") due.add(refreshRefusals);
    if (kind === "connect" || kind === "disconnect") due.add(refreshClients);
    if (kind === "token") due.add(refreshTokens);
    due.add(refreshOverview);
    if (dueTimer === null) {
      dueTimer = setTimeout(() => {
        dueTimer = null;
        const jobs = [...due];
        due.clear();
        Promise.all(jobs.map((job) => job())).catch(problem);
      }, REFRESH_MS / 4);
    }
  }

  // -- actions ------------------------------------------------------------------------------

  async function disconnect(client) {
    await call("DELETE", `/sync/clients/${encodeURIComponent(client.id)}`);
    say("sync-status", `Disconnected ${client.token} (${client.id}).`);
    await refreshClients();
  }

  async function revoke(name) {
    const answer = await call("DELETE", `/tokens/${encodeURIComponent(name)}`);
    const sockets = answer.closed_connections;
    say("sync-status", `Revoked ${name}: ${sockets} socket${sockets === 1 ? "" : "s"} closed.`);
    await Promise.all([refreshTokens(), refreshClients()]);
  }

  $("new-token").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    say("new-token-problem", "");
    call("POST", "/tokens", { name: String(form.get("name")).trim(), role: form.get("role") })
      .then((created) => {
        $("created-name").textContent = created.name;
        $("created-value").textContent = created.token;
        $("created-token").hidden = false;
        say("copy-state", "");
        event.target.reset();
        return refreshTokens();
      })
      .catch((error) => say("new-token-problem", error.message, true));
  });

  $("copy-token").addEventListener("click", () => {
    navigator.clipboard
      .writeText($("created-value").textContent)
      .then(() => say("copy-state", "copied"))
      .catch(() => say("copy-state", "copy failed: select the token and copy it by hand", true));
  });

  $("compact").addEventListener("submit", (event) => {
    event.preventDefault();
    const doc = String(new FormData(event.target).get("doc") || "").trim();
    compact(doc || null).catch((error) => say("compact-state", error.message, true));
  });

  async function compact(doc) {
    const progress = $("compact-progress");
    let job = await call("POST", "/sync/compactions", { doc });
    progress.hidden = false;
    while (job.state === "running") {
      progress.max = Math.max(1, job.total);
      progress.value = job.done;
      say("compact-state", `compacting ${doc || "every record"}: ${job.done} of ${job.total || "?"}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
      job = await call("GET", `/sync/compactions/${encodeURIComponent(job.id)}`);
    }
    progress.max = Math.max(1, job.total);
    progress.value = job.done;
    if (job.state === "failed") {
      say("compact-state", `compaction failed: ${job.error}`, true);
      return;
    }
    const r = job.report;
    say(
      "compact-state",
      `compacted ${r.documents} record${r.documents === 1 ? "" : "s"}: ` +
        `${r.updates_before} → ${r.updates_after} log rows, ${r.bytes_before} → ${r.bytes_after} bytes`,
    );
    await refreshOverview();
  }

  $("run-check").addEventListener("click", () => {
    say("check-state", "checking…");
    call("POST", "/sync/check")
      .then((c) => {
        const found = ["broken_links", "bad_heads", "forks", "orphans"]
          .filter((k) => c[k].count)
          .map((k) => `${c[k].count} ${k.replace("_", " ")}`);
        const problems = found.concat(c.sqlite);
        say(
          "check-state",
          problems.length
            ? `problems: ${problems.join(", ")}`
            : `ok: ${c.records} records, ${c.log_rows} log rows (${c.seconds} s)`,
          problems.length > 0,
        );
      })
      .catch((error) => say("check-state", error.message, true));
  });

  $("activity-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    startActivity().catch(problem);
  });

  function problem(error) {
    say("sync-status", error.message, true);
  }

  // -- start --------------------------------------------------------------------------------

  async function refreshAll() {
    await Promise.all([refreshOverview(), refreshClients(), refreshRefusals(), refreshCharts()]);
  }

  Promise.all([refreshAll(), refreshTokens(), startActivity()])
    .then(() => {
      say("sync-status", "Up to date.");
      $("sync-status").dataset.state = "ready";
    })
    .catch(problem);
  setInterval(() => {
    refreshAll().catch(problem);
  }, REFRESH_MS);
})();
