// One answer in the conversation: its text as Markdown, redrawn as chunks arrive; tool calls
// and their results, compactly; citations; a closing note; Copy and Regenerate.

import { copyText, h, icon } from "./dom.js";
import { setMarkdown } from "./markdown.js";

const FINISH_NOTES = {
  cancelled: "Stopped.",
  length: "Cut off at the length limit.",
  tool_calls: "The model asked for a tool that this page cannot run.",
};

const STORED_NOTES = {
  cancelled: "Stopped.",
  incomplete: "The answer is incomplete: it ended with an error.",
};

export class Answer {
  /**
   * @param {string} label who answers (the model), until the start event says
   * @param {(mutate: () => void) => void} update runs a change to the page, keeping the log
   *   scrolled to the end if it was there
   */
  constructor(label, update) {
    this.update = update;
    this.who = h("span", { className: "who", text: label });
    this.content = h("div", { className: "content" });
    this.element = h("li", { className: "msg assistant" }, [this.who, this.content]);
    /** @type {Array<{text: string, body: HTMLElement}>} the text between tool calls */
    this.segments = [];
    this.current = null; // the segment chunks go to; a tool call closes it
    /** @type {Map<string, {result: HTMLElement, details: HTMLElement}>} by call_id */
    this.calls = new Map();
    this.frame = 0;
    this.streaming = false;
    this.actions = null;
    /** The stored answer's id (`msg_…`), once known: what Regenerate and Fork name. */
    this.messageId = null;
    /** Its branch switcher, kept when Regenerate comes or goes. */
    this.lead = null;
  }

  /** The answer's text, as the model wrote it (Markdown), without tool calls. */
  get text() {
    return this.segments.map((s) => s.text).join("\n\n");
  }

  setLabel(label) {
    this.who.textContent = label;
  }

  /** Marks the answer as arriving: a cursor, and aria-busy so that screen readers wait. */
  beginStreaming() {
    this.streaming = true;
    this.element.classList.add("streaming");
    this.element.setAttribute("aria-busy", "true");
  }

  /** Shows a stored answer whole. */
  setText(text) {
    if (text) this._segment().text = text;
    this._render();
  }

  append(content) {
    this._segment().text += content;
    // Parsing and sanitizing the whole answer for every chunk would be wasted on frames
    // nobody sees: redraw at most once per frame.
    if (!this.frame) this.frame = requestAnimationFrame(() => this._render());
  }

  /** @param {{call_id: string, name: string, arguments: string}} event */
  toolCall(event) {
    this._flush();
    this.current = null; // text after the call is a new paragraph of the answer
    const call = callSummary(event.name, event.arguments);
    const summary = h("span", { className: "call", text: call });
    const result = h("span", { className: "result", text: " …" });
    const details = h("details", { className: "tool" }, [
      h("summary", {}, [summary, result]),
      h("div", { className: "tool-body" }, [
        h("span", { className: "tool-label", text: "Arguments" }),
        h("pre", { text: pretty(event.arguments) }),
      ]),
    ]);
    this.calls.set(event.call_id, { result, details });
    this.update(() => this.content.append(details));
  }

  /** @param {{call_id: string, name: string, result: string, is_error: boolean}} event */
  toolResult(event) {
    if (!this.calls.has(event.call_id)) {
      // A result whose call we did not see (a replay that began after it): show it alone.
      this.toolCall({ call_id: event.call_id, name: event.name, arguments: "" });
    }
    const { result, details } = this.calls.get(event.call_id);
    this.update(() => {
      result.textContent = ` → ${clip(oneLine(event.result), 60)}`;
      details.classList.toggle("error", event.is_error);
      details.querySelector(".tool-body")?.append(
        h("span", { className: "tool-label", text: event.is_error ? "Error" : "Result" }),
        h("pre", { text: event.result }),
      );
    });
  }

  /** The final `done` event. */
  finish(event) {
    const citations = event.metadata?.citations;
    if (Array.isArray(citations) && citations.length > 0) this.showCitations(citations);
    this.end(FINISH_NOTES[event.finish_reason]);
  }

  /** Ends the answer, with a note under it (an error's message, "Stopped."). */
  end(note, isError = false) {
    this._flush();
    this.streaming = false;
    this.element.classList.remove("streaming");
    this.element.removeAttribute("aria-busy");
    if (!note && !this.text && this.calls.size === 0) note = "(No answer.)";
    if (note) this.addNote(note, isError);
  }

  /** A stored answer's status, as a note. */
  noteStatus(status) {
    if (STORED_NOTES[status]) this.addNote(STORED_NOTES[status], status === "incomplete");
  }

  addNote(text, isError = false) {
    const note = h("p", { className: isError ? "note error" : "note", text });
    this.update(() => this.element.insertBefore(note, this.actions));
  }

  /** @param {Array<{n: number, id?: string, title?: string | null, url?: string | null}>} list */
  showCitations(list) {
    const items = list.map((source) => {
      const title = source.title || source.id || source.url || `Source ${source.n}`;
      const url = safeUrl(source.url);
      const label = url
        ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow", text: title })
        : h("span", { text: title });
      return h("li", { value: source.n }, [label]);
    });
    const block = h("section", { className: "citations", "aria-label": "Sources" }, [
      h("h3", { text: "Sources" }),
      h("ol", {}, items),
    ]);
    this.update(() => this.element.insertBefore(block, this.actions));
  }

  /**
   * Adds Copy, and Regenerate when given. Regenerate belongs to the last answer only: the
   * conversation moves on from there.
   */
  /**
   * Copy, and Regenerate when `onRegenerate` is given; `more`: other actions, each
   * `[icon, label, onClick]`, and `lead`: an element before them (the branch switcher).
   */
  addActions(onRegenerate, more = [], lead = null) {
    const copy = actionButton("copy", "Copy", async () => {
      try {
        await copyText(this.text);
        flash(copy, "check", "Copied");
      } catch {
        flash(copy, "copy", "Could not copy");
      }
    });
    const buttons = [copy];
    if (onRegenerate) buttons.push(actionButton("redo", "Regenerate", onRegenerate));
    for (const [name, label, onClick] of more) buttons.push(actionButton(name, label, onClick));
    this.actions?.remove();
    this.actions = h("div", { className: "actions" }, lead ? [lead, ...buttons] : buttons);
    this.update(() => this.element.append(this.actions));
  }

  removeRegenerate() {
    this.actions?.querySelector(".regenerate")?.remove();
  }

  _segment() {
    if (!this.current) {
      this.current = { text: "", body: h("div", { className: "body markdown" }) };
      this.segments.push(this.current);
      this.content.append(this.current.body);
    }
    return this.current;
  }

  _flush() {
    if (this.frame) {
      cancelAnimationFrame(this.frame);
      this._render();
    }
  }

  _render() {
    this.frame = 0;
    this.update(() => {
      for (const segment of this.segments) setMarkdown(segment.body, segment.text);
    });
  }
}

export function actionButton(iconName, label, onClick) {
  const button = h("button", { type: "button", className: `action ${label.toLowerCase()}` }, [
    icon(iconName),
    h("span", { text: label }),
  ]);
  button.addEventListener("click", onClick);
  return button;
}

/** Says how copying went on the Copy button, for a moment. */
function flash(button, iconName, text) {
  clearTimeout(button.flashTimer);
  button.replaceChildren(icon(iconName), h("span", { text }));
  button.flashTimer = setTimeout(() => {
    button.replaceChildren(icon("copy"), h("span", { text: "Copy" }));
  }, 1500);
}

/** `calculate(6*7)`: the call with its argument values, short enough for one line. */
function callSummary(name, args) {
  let shown = args ?? "";
  try {
    const parsed = JSON.parse(args || "{}");
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
      shown = Object.values(parsed)
        .map((v) => (typeof v === "string" ? v : JSON.stringify(v)))
        .join(", ");
    }
  } catch {
    // The model's arguments are not always valid JSON; show them as written.
  }
  return `${name}(${clip(oneLine(shown), 48)})`;
}

function pretty(json) {
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
}

const oneLine = (text) => String(text).replace(/\s+/g, " ").trim();
const clip = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/** Only web links: a citation's url comes from the request's sources, not from us. */
function safeUrl(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null;
  }
}
