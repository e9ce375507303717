// A conversation's branches on the page: editing a question (the next message goes beside
// it), switching between versions, forking, and deleting an answer with what follows it. The thread offers them on stored messages;
// this module talks to the gateway and says what it is doing.

import { h } from "./dom.js";

export class Branches {
  /**
   * @param {import("./chat-gateway.js").ChatGatewayClient} client
   * @param {HTMLFormElement} composer the note on an edit goes above it
   * @param {{
   *   conversation: () => string | null,
   *   reopen: (id: string) => void,
   *   listChanged: () => void,
   *   putText: (text: string) => void,
   *   notice: (text: string) => void,
   * }} hooks
   */
  constructor(client, composer, hooks) {
    this.client = client;
    this.hooks = hooks;
    /** @type {{parentId: string, item: HTMLElement} | null} */
    this.editing = null;
    const cancel = h("button", { type: "button", className: "secondary small", text: "Cancel" });
    cancel.addEventListener("click", () => {
      this.cancel();
      hooks.putText("");
    });
    this.note = h("p", { className: "editing", hidden: true, role: "status" }, [
      "Editing a message: the earlier version and its answers are kept. ",
      cancel,
    ]);
    composer.before(this.note);
  }

  /** Puts a question's text in the box: the next message replaces it, beside it. */
  edit(message, item) {
    this.editing = { parentId: message.parent_id ?? "", item };
    this.note.hidden = false;
    this.hooks.putText(message.content);
  }

  /** The edit the next message makes, if one was begun; it is then over. */
  takeEdit() {
    const editing = this.editing;
    this.cancel();
    return editing;
  }

  cancel() {
    this.editing = null;
    this.note.hidden = true;
  }

  /** Shows another version: the path through `messageId`, as it was last continued. */
  async switchTo(messageId) {
    const id = this.hooks.conversation();
    if (!id) return;
    try {
      await this.client.switchBranch(id, messageId);
    } catch (error) {
      this.hooks.notice(`Could not switch versions. ${error.message}`);
      return;
    }
    this.hooks.reopen(id);
  }

  /** Opens a new conversation holding the path down to `messageId`. */
  async fork(messageId) {
    const id = this.hooks.conversation();
    if (!id) return;
    let forked;
    try {
      forked = await this.client.fork(id, messageId);
    } catch (error) {
      this.hooks.notice(`Could not fork the conversation. ${error.message}`);
      return;
    }
    this.hooks.listChanged();
    this.hooks.reopen(forked);
  }

  /** Deletes an answer and everything after it; the page shows the version left. */
  async remove(messageId) {
    const id = this.hooks.conversation();
    if (!id || !window.confirm("Delete this answer and everything after it?")) return;
    try {
      await this.client.deleteMessage(id, messageId);
    } catch (error) {
      this.hooks.notice(`Could not delete the answer. ${error.message}`);
      return;
    }
    this.hooks.reopen(id);
  }
}
