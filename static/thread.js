// The conversation on screen: the log of messages, and keeping it scrolled to the newest line
// while an answer grows, unless the reader has scrolled up to read something earlier.

import { Answer, actionButton } from "./answer.js";
import { h, icon } from "./dom.js";

const NEAR_BOTTOM_PX = 80;

export class Thread {
  /**
   * @param {{scroller: HTMLElement, list: HTMLElement, empty: HTMLElement}} ui
   * @param {{
   *   labelFor: (message: any) => string,
   *   onRegenerate: () => void,
   *   onEdit: (message: any, item: HTMLElement) => void,
   *   onSwitch: (messageId: string) => void,
   *   onFork: (messageId: string) => void,
   *   onDelete: (messageId: string) => void,
   * }} hooks Edit, the branch switcher, Fork and Delete are offered on stored messages (their ids
   *   known).
   */
  constructor(ui, hooks) {
    this.ui = ui;
    this.hooks = hooks;
    /** @type {Answer | null} */
    this.lastAnswer = null;
    /** The last question asked: what Regenerate sends again. */
    this.lastQuestion = null;
  }

  clear() {
    this.ui.list.replaceChildren();
    this.lastAnswer = null;
    this.lastQuestion = null;
    this._earlier = null;
    this._changed();
  }

  get isEmpty() {
    return this.ui.list.childElementCount === 0;
  }

  /** A user's message: plain text, always. */
  addQuestion(text) {
    this.lastQuestion = text;
    const item = questionItem(text);
    this._append(item);
    return item;
  }

  /** A new, empty answer at the end; the previous one loses Regenerate. */
  addAnswer(label) {
    this.lastAnswer?.removeRegenerate();
    const answer = new Answer(label, (mutate) => this.update(mutate));
    this.lastAnswer = answer;
    this._append(answer.element);
    return answer;
  }

  /** Offers Regenerate on the last answer, once nothing is running. */
  offerRegenerate() {
    const answer = this.lastAnswer;
    if (answer && this.lastQuestion !== null) {
      answer.addActions(this.hooks.onRegenerate, answer.more ?? [], answer.lead);
    }
  }

  /** The last answer's stored id (`msg_…`), when known. */
  get lastAnswerId() {
    return this.lastAnswer?.messageId ?? null;
  }

  /** Removes `item` and everything after it: an edited question, whose branch gives way. */
  cutFrom(item) {
    while (item.nextSibling) item.nextSibling.remove();
    item.remove();
    this.lastAnswer = null;
    this._changed();
  }

  /** Removes the last answer: a regenerated one, whose new version takes its place. */
  dropLastAnswer() {
    this.lastAnswer?.element.remove();
    this.lastAnswer = null;
    this._changed();
  }

  /** A message about the conversation rather than in it (a refused request, say). */
  addNotice(text) {
    this._append(h("li", { className: "msg notice" }, [h("p", { className: "note error", text })]));
  }

  /** Shows a conversation's stored messages (GET /conversations/{id}), oldest first. */
  showStored(messages) {
    this.clear();
    for (const message of messages) {
      if (message.role === "user") this.lastQuestion = message.content;
      else this.lastAnswer?.removeRegenerate();
      const item = this._storedItem(message);
      if (message.role === "assistant") this.lastAnswer = item.answer;
      this._append(item);
    }
    this.offerRegenerate();
    this.scrollToBottom();
  }

  /**
   * Offers the messages before those shown, a page at a time: `load` reads the page before
   * and answers `{messages, more}` (oldest first; more: whether older ones are left), or null
   * when the conversation was left meanwhile.
   */
  offerEarlier(load) {
    const button = h("button", {
      className: "secondary small",
      type: "button",
      text: "Show earlier messages",
    });
    const note = h("p", { className: "note error", hidden: true });
    const item = h("li", { className: "msg notice earlier" }, [button, note]);
    button.addEventListener("click", async () => {
      button.disabled = true;
      note.hidden = true;
      try {
        const page = await load();
        if (!page || item !== this._earlier) return;
        this._prepend(page.messages.map((message) => this._storedItem(message)));
        if (!page.more) item.remove();
      } catch (error) {
        note.textContent = `Could not load earlier messages. ${error.message}`;
        note.hidden = false;
      }
      button.disabled = false;
    });
    this._earlier = item;
    this.ui.list.prepend(item);
    this._changed();
  }

  /** Runs a change to the log, then follows the end if the reader was there. */
  update(mutate) {
    const pinned = this.isNearBottom();
    mutate();
    this._changed();
    if (pinned) this.scrollToBottom();
  }

  isNearBottom() {
    const s = this.ui.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    this.ui.scroller.scrollTop = this.ui.scroller.scrollHeight;
  }

  /**
   * A stored message's element (without Regenerate), with its branch switcher, and Edit on a
   * question, Fork and Delete on an answer. An answer's element carries its `Answer` as `.answer`.
   */
  _storedItem(message) {
    const lead = this._switcher(message);
    if (message.role === "user") {
      const item = questionItem(message.content);
      const edit = actionButton("edit", "Edit", () => this.hooks.onEdit(message, item));
      item.append(h("div", { className: "actions" }, [lead, edit]));
      return item;
    }
    const answer = new Answer(this.hooks.labelFor(message), (mutate) => this.update(mutate));
    answer.setText(message.content);
    answer.noteStatus(message.status);
    answer.messageId = message.id;
    answer.lead = lead;
    answer.more = [
      ["fork", "Fork", () => this.hooks.onFork(message.id)],
      ["trash", "Delete", () => this.hooks.onDelete(message.id)],
    ];
    answer.addActions(null, answer.more, lead);
    answer.element.answer = answer;
    return answer.element;
  }

  /** `< 2/3 >` on a message with siblings: its place among them, and a step either way. */
  _switcher(message) {
    if (!message.branch) return null;
    const { index, count, ids } = message.branch;
    const step = (to, name, label) => {
      const button = h("button", { type: "button", className: "action", "aria-label": label }, [
        icon(name),
      ]);
      button.disabled = to < 0 || to >= count;
      button.addEventListener("click", () => this.hooks.onSwitch(ids[to]));
      return button;
    };
    return h("span", { className: "branch" }, [
      step(index - 1, "prev", "Previous version"),
      h("span", { className: "branch-place", text: `${index + 1}/${count}` }),
      step(index + 1, "next", "Next version"),
    ]);
  }

  /** Puts older messages above those shown, keeping in view what the reader was reading. */
  _prepend(items) {
    const s = this.ui.scroller;
    const fromBottom = s.scrollHeight - s.scrollTop;
    this._earlier.after(...items);
    this._changed();
    s.scrollTop = s.scrollHeight - fromBottom;
  }

  _append(item) {
    this.ui.list.append(item);
    this._changed();
    this.scrollToBottom(); // a new message is always brought into view
  }

  _changed() {
    this.ui.empty.hidden = !this.isEmpty;
  }
}

/** A user's message: plain text, always. */
function questionItem(text) {
  return h("li", { className: "msg user" }, [
    h("span", { className: "who visually-hidden", text: "You" }),
    h("div", { className: "body", text }),
  ]);
}
