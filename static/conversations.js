// The conversation list (GET /conversations): newest first, a page at a time with the
// cursor, kept current from the first page; renaming and deleting in place.

import { api } from "./api.js";
import { h, icon, relativeTime } from "./dom.js";

const PAGE_SIZE = 20;

export class ConversationList {
  /**
   * @param {{list: HTMLElement, more: HTMLButtonElement, status: HTMLElement}} ui
   * @param {import("./chat-gateway.js").ChatGatewayClient} client
   * @param {{
   *   onOpen: (id: string) => void,
   *   onRenamed: (id: string, title: string) => void,
   *   onDeleted: (id: string) => void,
   * }} hooks
   */
  constructor(ui, client, hooks) {
    this.ui = ui;
    this.client = client;
    this.hooks = hooks;
    /** @type {Map<string, {summary: any, item: HTMLElement}>} */
    this.rows = new Map();
    this.cursor = null;
    this.loaded = false;
    this.activeId = null;
    this._loading = null;
    this._reading = null; // the refresh under way
    this._queued = null; // the refresh that follows it
    ui.more.addEventListener("click", () => this.loadMore());
  }

  /** Reads the first page, replacing whatever was shown. */
  load() {
    this._loading ??= this._load().finally(() => {
      this._loading = null;
    });
    return this._loading;
  }

  async _load() {
    this._setStatus("Loading…");
    try {
      const page = await api(this.client, `/conversations?limit=${PAGE_SIZE}`);
      this.rows.clear();
      this.ui.list.replaceChildren();
      for (const summary of page.data) this._upsert(summary, false);
      this._setCursor(page.next_cursor);
      this.loaded = true;
      this._setStatus(this.rows.size ? "" : "No conversations yet.");
    } catch {
      // Tried again once the client is connected (a gateway that was down, a new token).
      this._setStatus("Could not load the conversations.");
    }
  }

  async loadMore() {
    if (!this.cursor) return;
    this.ui.more.disabled = true;
    try {
      const cursor = encodeURIComponent(this.cursor);
      const page = await api(this.client, `/conversations?limit=${PAGE_SIZE}&cursor=${cursor}`);
      // A conversation updated during the walk may be shown already (with its older time).
      for (const summary of page.data) if (!this.rows.has(summary.id)) this._upsert(summary, false);
      this._setCursor(page.next_cursor);
    } catch (error) {
      this._setStatus(`Could not load more. ${error.message}`);
    } finally {
      this.ui.more.disabled = false;
    }
  }

  /**
   * Brings in what changed since the list was read (a new conversation, an answer stored, one
   * started in another tab): everything newer comes first on the first page, so it is read
   * down to the first conversation that is not newer than what the list already has.
   */
  refresh() {
    if (!this.loaded) return this.load();
    // One read at a time. Asked for during a read, one more read follows it: what the caller
    // wants to see (an answer just stored) may have happened after that read began.
    this._queued ??= (this._reading ?? Promise.resolve()).then(() => {
      this._queued = null;
      this._reading = this._refresh().finally(() => {
        this._reading = null;
      });
      return this._reading;
    });
    return this._queued;
  }

  async _refresh() {
    let newest = 0;
    for (const { summary } of this.rows.values()) newest = Math.max(newest, summary.updated_at);
    try {
      const page = await api(this.client, `/conversations?limit=${PAGE_SIZE}`);
      const fresh = [];
      for (const summary of page.data) {
        const known = this.rows.get(summary.id)?.summary;
        if (summary.updated_at < newest || known?.updated_at === summary.updated_at) {
          if (known) this._upsert(summary, false); // same place; its status may have moved on
          break;
        }
        fresh.push(summary);
      }
      for (const summary of fresh.reverse()) this._upsert(summary, true);
      if (this.rows.size) this._setStatus("");
    } catch {
      // The list stays as it was; the next turn refreshes it again.
    }
  }

  /** Marks the open conversation. */
  setActive(id) {
    this.activeId = id;
    for (const [rowId, { item }] of this.rows) {
      const open = item.querySelector(".open");
      if (rowId === id) open.setAttribute("aria-current", "true");
      else open.removeAttribute("aria-current");
    }
  }

  /** Redraws the rows' "5 min ago". */
  retime() {
    for (const { summary, item } of this.rows.values()) {
      if (item.querySelector(".meta")) this._fill(item, summary);
    }
  }

  titleOf(id) {
    return this.rows.get(id)?.summary.title ?? null;
  }

  /** Adds or updates a row; `top` moves it to the start of the list. */
  _upsert(summary, top) {
    const row = this.rows.get(summary.id);
    if (row) {
      row.summary = summary;
      this._fill(row.item, summary);
      if (top) this.ui.list.prepend(row.item);
      return;
    }
    const item = this._row(summary);
    this.rows.set(summary.id, { summary, item });
    if (top) this.ui.list.prepend(item);
    else this.ui.list.append(item);
  }

  _row(summary) {
    const id = summary.id;
    const titleId = `conversation-title-${id}`;
    const open = h("button", { type: "button", className: "open" }, [
      h("span", { className: "title", id: titleId }),
      h("span", { className: "meta" }),
    ]);
    open.addEventListener("click", () => this.hooks.onOpen(id));
    const rename = this._iconButton("edit", "Rename", titleId, () => this._rename(id));
    const remove = this._iconButton("trash", "Delete", titleId, () => this._confirmDelete(id));
    const item = h("li", { className: "conversation" }, [
      open,
      h("div", { className: "row-actions" }, [rename, remove]),
    ]);
    item.dataset.id = id;
    this._fill(item, summary);
    if (id === this.activeId) open.setAttribute("aria-current", "true");
    return item;
  }

  _fill(item, summary) {
    const running = summary.generation?.status === "running";
    item.querySelector(".title").textContent = summary.title || "Untitled";
    item.querySelector(".meta").textContent = running
      ? "Answering…"
      : relativeTime(summary.updated_at);
    item.classList.toggle("running", running);
  }

  _iconButton(iconName, label, describedBy, onClick) {
    const button = h(
      "button",
      { type: "button", className: "icon-button", title: label, "aria-label": label },
      [icon(iconName)],
    );
    button.setAttribute("aria-describedby", describedBy);
    button.addEventListener("click", onClick);
    return button;
  }

  /** Swaps the row for a small form: Enter (or Save) renames, Escape (or Cancel) does not. */
  _rename(id) {
    const row = this.rows.get(id);
    if (!row) return;
    const { item, summary } = row;
    const inputId = `rename-${id}`;
    const input = h("input", { id: inputId, value: summary.title, maxLength: 200, required: true });
    const error = h("p", { className: "row-error", hidden: true, role: "alert" });
    const form = h("form", { className: "rename" }, [
      h("label", { htmlFor: inputId, className: "visually-hidden", text: "Title" }),
      input,
      h("div", { className: "row-buttons" }, [
        h("button", { type: "submit", className: "small", text: "Save" }),
        h("button", { type: "button", className: "small secondary", text: "Cancel" }),
      ]),
      error,
    ]);
    const parts = [...item.children];
    const restore = () => {
      form.replaceWith(...parts);
      item.querySelector(".row-actions [aria-label='Rename']")?.focus();
    };
    form.querySelector("button.secondary").addEventListener("click", restore);
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation(); // Escape here cancels the rename, not the drawer
        restore();
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const title = input.value.trim();
      if (!title || title === summary.title) return restore();
      form.querySelectorAll("button, input").forEach((el) => (el.disabled = true));
      try {
        const updated = await api(this.client, `/conversations/${encodeURIComponent(id)}`, {
          method: "PATCH",
          body: { title },
        });
        row.summary = updated;
        restore();
        this._fill(item, updated);
        this.hooks.onRenamed(id, updated.title);
      } catch (failure) {
        form.querySelectorAll("button, input").forEach((el) => (el.disabled = false));
        error.textContent = failure.message;
        error.hidden = false;
        input.focus();
      }
    });
    item.replaceChildren(form);
    input.focus();
    input.select();
  }

  /** Asks first, in the row itself: a deleted conversation cannot be brought back. */
  _confirmDelete(id) {
    const row = this.rows.get(id);
    if (!row) return;
    const { item } = row;
    const parts = [...item.children];
    const cancel = h("button", { type: "button", className: "small secondary", text: "Cancel" });
    const confirm = h("button", { type: "button", className: "small danger", text: "Delete" });
    const error = h("p", { className: "row-error", hidden: true, role: "alert" });
    const box = h(
      "div",
      { className: "confirm", role: "group", "aria-label": "Delete conversation" },
      [
        h("p", { text: `Delete “${row.summary.title || "Untitled"}”?` }),
        h("div", { className: "row-buttons" }, [confirm, cancel]),
        error,
      ],
    );
    const restore = () => {
      box.replaceWith(...parts);
      item.querySelector(".row-actions [aria-label='Delete']")?.focus();
    };
    cancel.addEventListener("click", restore);
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        restore();
      }
    });
    confirm.addEventListener("click", async () => {
      confirm.disabled = cancel.disabled = true;
      try {
        await api(this.client, `/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
      } catch (failure) {
        // Already gone (deleted in another tab, or expired): that is what was asked for.
        if (failure.status !== 404) {
          confirm.disabled = cancel.disabled = false;
          error.textContent = failure.message;
          error.hidden = false;
          return;
        }
      }
      this._remove(id);
      this.hooks.onDeleted(id);
    });
    item.replaceChildren(box);
    cancel.focus();
  }

  _remove(id) {
    const row = this.rows.get(id);
    if (!row) return;
    // Keep the keyboard in the list: on the next row, else the previous, else New chat.
    const next = row.item.nextElementSibling ?? row.item.previousElementSibling;
    row.item.remove();
    this.rows.delete(id);
    next?.querySelector(".open")?.focus();
    if (!this.rows.size) this._setStatus("No conversations yet.");
  }

  _setCursor(cursor) {
    this.cursor = cursor;
    this.ui.more.hidden = !cursor;
  }

  _setStatus(text) {
    this.ui.status.textContent = text;
    this.ui.status.hidden = !text;
  }
}
