// A collection's page: the table from GET /api/{collection} (search, sort, filters, pages,
// deleted records), kept current by the change feed without reloading.
"use strict";

(() => {
  const { call, errorMessage, follow, element, display } = crdtSync;
  const schema = JSON.parse(document.getElementById("schema").textContent);
  const name = schema.collection;
  const columns = schema.fields.filter((field) => field.kind !== "text");
  const table = document.getElementById("records");
  const body = table.querySelector("tbody");
  const tools = document.getElementById("tools");
  const problem = document.getElementById("problem");
  const PAGE = 25;
  const query = new URLSearchParams(location.search);
  let cursors = []; // the `cursor` of each page before this one
  let next = null;
  const shown = new Map(); // record id -> its row

  function isDeletedView() {
    return query.get("deleted") === "true";
  }

  function headers() {
    const row = table.querySelector("thead tr");
    row.replaceChildren();
    const sort = query.get("sort") ?? "id";
    for (const field of [{ name: "id" }, ...columns]) {
      const arrow = sort === field.name ? " ↑" : sort === `-${field.name}` ? " ↓" : "";
      const link = element("a", { href: "#", "data-sort": field.name }, field.name + arrow);
      link.addEventListener("click", (event) => {
        event.preventDefault();
        query.set("sort", sort === field.name ? `-${field.name}` : field.name);
        reload();
      });
      const cell = element("th");
      cell.append(link);
      row.append(cell);
    }
    row.append(element("th"));
  }

  function cell(field, record) {
    const td = element("td", { "data-field": field.name });
    const value = record[field.name];
    if (field.name === "id" || field.name === schema.title_field) {
      td.append(element("a", { href: `/admin/${name}/${encodeURIComponent(record.id)}` },
        display(field, value)));
    } else if (field.kind === "reference" && value) {
      td.append(element("a", { href: `/admin/${field.target}/${encodeURIComponent(value)}` },
        value));
    } else {
      td.textContent = display(field, value);
    }
    return td;
  }

  function row(record, deleted) {
    const tr = element("tr", { "data-id": record.id });
    tr.classList.toggle("deleted", deleted);
    for (const field of [{ name: "id" }, ...columns]) tr.append(cell(field, record));
    const actions = element("td");
    if (deleted) actions.append(restoreForm(record));
    tr.append(actions);
    return tr;
  }

  // Deletes are final (devices rely on it): a deleted record comes back as a copy.
  function restoreForm(record) {
    const form = element("form", { class: "restore-as" });
    const id = element("input", { name: "as", "aria-label": "new id" });
    id.value = `${record.id}-restored`.slice(0, 64);
    form.append(id, element("button", { type: "submit" }, "Restore as"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const doc = await call("GET", `/api/docs/${name}/${encodeURIComponent(record.id)}`);
      if (!doc.ok) return report(errorMessage(doc));
      const answer = await call("POST", `/api/${name}/${encodeURIComponent(record.id)}/restore`,
        { seq: doc.body.seq, as: id.value });
      if (!answer.ok) return report(errorMessage(answer));
      location.assign(`/admin/${name}/${encodeURIComponent(id.value)}`);
    });
    return form;
  }

  function report(message) {
    problem.hidden = !message;
    problem.textContent = message ?? "";
  }

  async function load(cursor) {
    const params = new URLSearchParams(query);
    params.set("limit", PAGE);
    if (cursor) params.set("cursor", cursor);
    const answer = await call("GET", `/api/${name}?${params}`);
    if (!answer.ok) return report(errorMessage(answer));
    report(null);
    next = answer.body.next;
    shown.clear();
    body.replaceChildren(...answer.body.items.map((record) => {
      const tr = row(record, isDeletedView());
      shown.set(record.id, tr);
      return tr;
    }));
    document.getElementById("next").disabled = next === null;
    document.getElementById("previous").disabled = cursors.length === 0;
    table.dataset.loaded = "true";
  }

  function reload() {
    cursors = [];
    history.replaceState(null, "", `?${query}`);
    headers();
    load(null);
  }

  // Does a changed record belong in this view? (Filters as the server applies them.)
  function matches(change) {
    if (change.deleted !== isDeletedView()) return false;
    for (const [key, value] of query) {
      const field = schema.fields.find((f) => f.name === key);
      if (field && String(change.record[key]) !== value) return false;
    }
    const q = (query.get("q") ?? "").toLowerCase();
    return !q || schema.fields.some((f) => ["string", "text", "enum", "reference"].includes(f.kind)
      && String(change.record[f.name] ?? "").toLowerCase().includes(q));
  }

  function apply(changes) {
    for (const change of changes) {
      const old = shown.get(change.id);
      if (old) {
        const fresh = row(change.record, change.deleted);
        fresh.classList.add("fresh");
        old.replaceWith(fresh);
        shown.set(change.id, fresh);
      } else if (matches(change)) {
        const fresh = row(change.record, change.deleted);
        fresh.classList.add("fresh");
        body.prepend(fresh);
        shown.set(change.id, fresh);
      }
    }
  }

  for (const [key, value] of query) {
    const input = tools.elements.namedItem(key);
    if (input?.type === "checkbox") input.checked = value === "true";
    else if (input) input.value = value;
  }
  tools.addEventListener("submit", (event) => {
    event.preventDefault();
    const sort = query.get("sort");
    for (const key of [...query.keys()]) query.delete(key);
    for (const [key, value] of new FormData(tools)) if (value) query.set(key, value);
    if (sort) query.set("sort", sort);
    reload();
  });
  for (const select of tools.querySelectorAll("select, input[type=checkbox]")) {
    select.addEventListener("change", () => tools.requestSubmit());
  }
  document.getElementById("next").addEventListener("click", () => {
    cursors.push(next);
    load(next);
  });
  document.getElementById("previous").addEventListener("click", () => {
    cursors.pop();
    load(cursors.length ? cursors[cursors.length - 1] : null);
  });
  headers();
  load(null);
  follow(`collections=${encodeURIComponent(name)}`, apply, document.getElementById("feed-status"));
})();
