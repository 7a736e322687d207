// The admin panel's API client: the documented REST routes (docs/REST.md), called with the
// session cookie and its CSRF token, and the change feed. Values are only ever put into the
// page as text (textContent, input values), never as HTML.
"use strict";

const crdtSync = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

  // One REST call; resolves to {ok, status, body} (body: parsed JSON, or null).
  async function call(method, path, body) {
    const init = { method, headers: {}, credentials: "same-origin" };
    if (method !== "GET") init.headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      return { ok: false, status: 0, body: { error: { message: `server unreachable: ${error}` } } };
    }
    if (response.status === 401) {
      location.assign(`/admin/sign-in?next=${encodeURIComponent(location.pathname + location.search)}`);
    }
    const text = await response.text();
    return { ok: response.ok, status: response.status, body: text ? JSON.parse(text) : null };
  }

  function errorMessage(answer) {
    return answer.body?.error?.message ?? `request failed (${answer.status})`;
  }

  // The field a schema message is about: "contacts/x: email must be ..." names it first.
  function fieldOf(message, fields) {
    const reason = message.replace(/^[^:]*: /, "");
    return fields.find((name) => reason.startsWith(`${name} `) || reason.includes(`'${name}'`));
  }

  // The change feed (GET /api/admin/feed, SSE). EventSource reconnects by itself and sends
  // Last-Event-ID, so nothing is missed across a dropped connection. Changes are handed over
  // at most every 50 ms, the latest per record, so a busy store redraws little.
  function follow(query, onChanges, statusElement) {
    const source = new EventSource(`/api/admin/feed?${query}`);
    let pending = new Map();
    let scheduled = false;
    const show = (text, state) => {
      if (!statusElement) return;
      statusElement.textContent = text;
      statusElement.dataset.state = state;
    };
    source.addEventListener("ready", (event) => {
      show("live", "live");
      if (statusElement) statusElement.dataset.cursor = JSON.parse(event.data).cursor;
    });
    source.addEventListener("change", (event) => {
      const change = JSON.parse(event.data);
      pending.set(change.doc, change);
      if (statusElement) statusElement.dataset.cursor = change.seq;
      if (!scheduled) {
        scheduled = true;
        setTimeout(() => {
          const changes = [...pending.values()];
          pending = new Map();
          scheduled = false;
          onChanges(changes);
        }, 50);
      }
    });
    source.addEventListener("error", () => show("reconnecting…", "reconnecting"));
    window.addEventListener("pagehide", () => source.close());
    return source;
  }

  function element(tag, attributes = {}, text) {
    const made = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
    if (text !== undefined && text !== null) made.textContent = String(text);
    return made;
  }

  function display(field, value) {
    if (value === null || value === undefined) return "";
    if (field.kind === "bool") return value ? "yes" : "no";
    return String(value);
  }

  return { call, errorMessage, fieldOf, follow, element, display };
})();
