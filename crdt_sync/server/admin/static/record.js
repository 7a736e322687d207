// One record: a form built from the schema (create with POST, save with PATCH of the changed
// fields, text fields merged through POST .../text/{field} against the version opened),
// another writer's changes shown as they land (change feed), and its history with restores.
"use strict";

(() => {
  const { call, errorMessage, fieldOf, follow, element, display } = crdtSync;
  const schema = JSON.parse(document.getElementById("schema").textContent);
  const name = schema.collection;
  const form = document.getElementById("record-form");
  const recordId = form.dataset.recordId;
  const problem = document.getElementById("problem");
  const saved = document.getElementById("saved");
  const path = recordId ? `/api/${name}/${encodeURIComponent(recordId)}` : null;
  const opened = {}; // field -> the value the form shows from the server
  const textBase = {}; // text field -> the record's seq its textarea content comes from
  let isDeleted = false;

  function input(field) {
    let control;
    if (field.kind === "text") {
      control = element("textarea", { name: field.name });
    } else if (field.kind === "enum" || field.kind === "bool") {
      control = element("select", { name: field.name });
      control.append(element("option", { value: "" }, field.required ? "choose…" : "—"));
      const choices = field.kind === "bool" ? [["true", "yes"], ["false", "no"]]
        : field.choices.map((choice) => [choice, choice]);
      for (const [value, label] of choices) control.append(element("option", { value }, label));
    } else {
      control = element("input", { type: "text", name: field.name, autocomplete: "off" });
      if (field.kind === "date") control.placeholder = "YYYY-MM-DD";
      if (field.kind === "datetime") control.placeholder = "2026-12-03T09:00:00Z";
      if (field.kind === "reference") picker(field, control);
    }
    return control;
  }

  // A reference picks its record: suggestions from GET /api/{target}?q=, by title.
  function picker(field, control) {
    const list = element("datalist", { id: `pick-${field.name}` });
    control.setAttribute("list", list.id);
    control.placeholder = `a ${field.target} id`;
    control.pickerList = list;
    let asked = 0;
    control.addEventListener("input", async () => {
      const mine = ++asked;
      const q = encodeURIComponent(control.value);
      const answer = await call("GET", `/api/${field.target}?q=${q}&limit=10`);
      if (!answer.ok || mine !== asked) return;
      const title = schema.titles[field.target];
      list.replaceChildren(...answer.body.items.map((record) =>
        element("option", { value: record.id }, `${record[title] ?? ""} (${record.id})`)));
    });
  }

  function build() {
    const box = document.getElementById("fields");
    for (const field of schema.fields) {
      const label = element("label");
      label.append(element("span", {}, field.name + (field.required ? " *" : "")
        + (field.kind === "reference" ? ` → ${field.target}` : "")));
      const control = input(field);
      label.append(control);
      if (control.pickerList) label.append(control.pickerList);
      if (field.kind === "reference") {
        const link = element("a", { class: "reference-link", "data-for": field.name, hidden: "" },
          "open");
        label.append(link);
      }
      label.append(element("span", { class: "remote-change", "data-for": field.name }));
      label.append(element("span", { class: "field-error", "data-for": field.name }));
      box.append(label);
    }
  }

  const control = (fieldName) => form.elements.namedItem(fieldName);
  const note = (kind, fieldName) => form.querySelector(`.${kind}[data-for="${fieldName}"]`);

  function asText(field, value) {
    return value === null || value === undefined ? "" : String(value);
  }

  // The form's value as JSON: numbers and bools typed, "" is null; a value that does not
  // parse goes as typed, for the schema's own message.
  function valueOf(field) {
    const raw = control(field.name).value;
    if (field.kind === "text") return raw;
    if (raw.trim() === "") return null;
    if (field.kind === "number") return Number.isFinite(Number(raw)) ? Number(raw) : raw;
    if (field.kind === "bool") return raw === "true";
    return raw;
  }

  function isDirty(field) {
    return control(field.name).value !== asText(field, opened[field.name]);
  }

  function show(field, value, seq) {
    control(field.name).value = asText(field, value);
    opened[field.name] = value;
    if (field.kind === "text") textBase[field.name] = seq;
    note("remote-change", field.name).textContent = "";
    const link = note("reference-link", field.name);
    if (link) {
      link.hidden = !value;
      if (value) link.href = `/admin/${field.target}/${encodeURIComponent(value)}`;
    }
  }

  function fill(record, seq) {
    for (const field of schema.fields) show(field, record[field.name], seq);
    document.getElementById("title").textContent = record[schema.title_field] || recordId;
  }

  function clearErrors() {
    for (const span of form.querySelectorAll(".field-error")) span.textContent = "";
    problem.hidden = true;
    saved.textContent = "";
  }

  function report(answer) {
    const message = errorMessage(answer);
    const target = fieldOf(message, ["id", ...schema.fields.map((f) => f.name)]);
    const span = target && note("field-error", target);
    if (span) span.textContent = message;
    else {
      problem.hidden = false;
      problem.textContent = message;
    }
  }

  async function create() {
    const body = {};
    const id = control("id").value.trim();
    if (id) body.id = id;
    for (const field of schema.fields) {
      const value = valueOf(field);
      if (value !== null && value !== "") body[field.name] = value;
    }
    const answer = await call("POST", `/api/${name}`, body);
    if (!answer.ok) return report(answer);
    location.assign(`/admin/${name}/${encodeURIComponent(answer.body.id)}`);
  }

  async function save() {
    const patch = {};
    const texts = [];
    for (const field of schema.fields) {
      if (!isDirty(field)) continue;
      if (field.kind === "text") texts.push(field);
      else patch[field.name] = valueOf(field);
    }
    if (Object.keys(patch).length) {
      const answer = await call("PATCH", path, patch);
      if (!answer.ok) return report(answer);
    }
    for (const field of texts) {
      const answer = await call("POST", `${path}/text/${field.name}`,
        { base_seq: textBase[field.name], text: valueOf(field) });
      if (!answer.ok) return report(answer);
    }
    await refresh();
    saved.textContent = texts.length + Object.keys(patch).length ? "Saved." : "Nothing to save.";
  }

  async function refresh() {
    const answer = await call("GET", `/api/docs/${name}/${encodeURIComponent(recordId)}`);
    if (!answer.ok) return report(answer);
    isDeleted = answer.body.is_deleted;
    fill(answer.body.record, answer.body.seq);
    if (isDeleted) markDeleted();
    form.dataset.loaded = "true";
    await loadHistory();
  }

  function markDeleted() {
    problem.hidden = false;
    problem.textContent = "This record is deleted. Deletes are final: restore it as a copy "
      + "from its collection's deleted records.";
    for (const item of form.elements) item.disabled = true;
  }

  // Another writer's change: fields the user has not touched follow it; touched ones keep
  // what the user typed and say what landed (text fields will merge both on save).
  function landed(changes) {
    for (const change of changes) {
      for (const field of schema.fields) {
        const value = change.record[field.name];
        if (asText(field, value) === asText(field, opened[field.name])) continue;
        if (!isDirty(field)) show(field, value, change.seq);
        else {
          note("remote-change", field.name).textContent = field.kind === "text"
            ? "Someone else edited this text meanwhile: saving merges both."
            : `Changed elsewhere to ${JSON.stringify(value)}; saving keeps yours.`;
          opened[field.name] = value;
        }
      }
      if (change.deleted && !isDeleted) {
        isDeleted = true;
        markDeleted();
      }
    }
    loadHistory();
  }

  async function loadHistory() {
    const answer = await call("GET", `${path}/history`);
    if (!answer.ok) return;
    const body = document.querySelector("#history tbody");
    body.replaceChildren(...answer.body.slice().reverse().map(historyRow));
  }

  const DOORS = { yjs: "/yjs", ws: "/ws", rest: "REST", admin: "admin panel", cli: "CLI",
    import: "import" };

  function who(step) {
    const token = step.token && step.token !== step.origin ? ` (token ${step.token})` : "";
    const door = step.door ? ` via ${DOORS[step.door] || step.door}` : "";
    return `${step.origin}${token}${door}`;
  }

  function historyRow(step) {
    const tr = element("tr", { "data-seq": step.seq });
    tr.append(element("td", {}, step.seq), element("td", {}, new Date(step.at * 1000)
      .toLocaleString()), element("td", { class: "who" }, who(step)));
    const what = element("td");
    const list = element("ul");
    if (step.is_snapshot) list.append(element("li", {}, "compacted: earlier history folded"));
    if (step.deletes) list.append(element("li", {}, "deleted"));
    for (const change of step.changes) {
      const field = schema.fields.find((f) => f.name === change.field);
      const item = element("li", { "data-field": change.field });
      item.append(element("strong", {}, change.field), ": ",
        element("span", { class: "from" }, JSON.stringify(change.from)), " → ",
        element("span", { class: "to" }, JSON.stringify(change.to)));
      if (!isDeleted) {
        const back = element("button", { type: "button", class: "restore-field" }, "restore");
        back.title = `set ${change.field} to ${display(field, change.to) || "empty"} again`;
        back.addEventListener("click", () => restore(step.seq, [change.field]));
        item.append(back);
      }
      list.append(item);
    }
    what.append(list);
    const actions = element("td");
    const view = element("button", { type: "button", class: "view-at" }, "view");
    view.addEventListener("click", () => viewAt(step.seq));
    actions.append(view);
    if (!isDeleted) {
      const all = element("button", { type: "button", class: "restore-all" }, "restore all");
      all.addEventListener("click", () => restore(step.seq, null));
      actions.append(all);
    }
    tr.append(what, actions);
    return tr;
  }

  async function viewAt(seq) {
    const answer = await call("GET", `${path}/at/${seq}`);
    if (!answer.ok) return report(answer);
    document.getElementById("at").hidden = false;
    document.getElementById("at-title").textContent = `As it was after update #${answer.body.seq}`;
    const list = document.getElementById("at-record");
    list.replaceChildren();
    for (const field of schema.fields) {
      list.append(element("dt", {}, field.name),
        element("dd", {}, display(field, answer.body.record[field.name])));
    }
  }

  async function restore(seq, fields) {
    clearErrors();
    const body = fields ? { seq, fields } : { seq };
    const answer = await call("POST", `${path}/restore`, body);
    if (!answer.ok) return report(answer);
    await refresh();
    saved.textContent = `Restored from update #${seq}.`;
  }

  build();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clearErrors();
    (recordId ? save : create)();
  });
  if (recordId) {
    document.getElementById("delete").addEventListener("click", async () => {
      const answer = await call("DELETE", path);
      if (!answer.ok) return report(answer);
      location.assign(`/admin/${name}`);
    });
    follow(`doc=${encodeURIComponent(`${name}/${recordId}`)}`, landed,
      document.getElementById("feed-status"));
    refresh();
  } else {
    form.dataset.loaded = "true";
  }
})();
