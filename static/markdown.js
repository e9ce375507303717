// Answers are Markdown: marked turns them into HTML, DOMPurify cleans that HTML, and only then
// does it reach innerHTML. User messages never come here: they are shown as plain text.

import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const marked = new Marked({
  gfm: true,
  breaks: true, // chat text uses single line breaks as line breaks
  renderer: {
    // Markdown lets raw HTML through; a model that writes <b> or <script> is shown writing it.
    // DOMPurify would remove what is dangerous, but what it kept would still be the model's
    // markup on our page (forms, images, lookalike buttons).
    html({ text, block }) {
      if (!block) return escapeHtml(text);
      return `<p>${escapeHtml(text.trim()).replaceAll("\n", "<br>")}</p>\n`;
    },
    // An image would be fetched as soon as it is shown, and its URL can carry anything the
    // model read (a known way to leak a conversation). A link is only followed when clicked.
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
  },
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "img", "form", "button", "textarea", "select", "iframe"],
  FORBID_ATTR: ["style"],
};

// Links in answers open elsewhere and do not tell the target where they came from.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** Markdown to sanitized HTML. */
export function renderMarkdown(text) {
  // trim: the newline marked leaves after the last block would be a stray text node.
  return DOMPurify.sanitize(marked.parse(text), PURIFY).trim();
}

/** Shows Markdown in an element, through the sanitizer. */
export function setMarkdown(element, text) {
  element.innerHTML = renderMarkdown(text);
}
