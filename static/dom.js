// Small DOM helpers shared by the page's modules.

/**
 * Creates an element. Text goes in with `textContent`, never as markup: whatever a model or a
 * user wrote is shown, not run.
 * @param {string} tag
 * @param {Record<string, any>} [props] properties (`className`, `hidden`…), `text`, and
 *   attributes: `role` and any name with a dash (`aria-label`, `data-id`)
 * @param {Array<Node | string | null | false | undefined>} [children]
 */
export function h(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.includes("-") || key === "role") node.setAttribute(key, String(value));
    else node[key] = value;
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

/** An inline SVG icon from the set below, hidden from assistive technology. */
export function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

// Stroked 24x24 outlines, drawn with `stroke: currentColor` by the stylesheet.
const ICONS = {
  copy: "M9 9h10v11H9zM5 15V4h10",
  check: "M5 12.5l4.5 4.5L19 7.5",
  redo: "M20 12a8 8 0 1 1-2.34-5.66M20 4v4.5h-4.5",
  edit: "M4 20h4L19 9l-4-4L4 16zM13.5 6.5l4 4",
  trash: "M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13",
  fork: "M7 4v6a4 4 0 0 0 4 4h2a4 4 0 0 1 4 4v2M7 14v6M17 4v4",
  prev: "M14.5 6l-6 6 6 6",
  next: "M9.5 6l6 6-6 6",
};

/** Copies text to the clipboard; the fallback serves pages not in a secure context. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = h("textarea", { value: text, readOnly: true, className: "visually-hidden" });
  document.body.append(area);
  area.select();
  const copied = document.execCommand("copy");
  area.remove();
  if (!copied) throw new Error("The browser did not allow copying.");
}

/** "just now", "5 min ago", "3 h ago", "yesterday", or a date: for the conversation list. */
export function relativeTime(ms, now = Date.now()) {
  const minutes = Math.round((now - ms) / 60_000);
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 24) return `${hours} h ago`;
  if (hours < 48) return "yesterday";
  const sameYear = new Date(ms).getFullYear() === new Date(now).getFullYear();
  return new Date(ms).toLocaleDateString(undefined, {
    month: "short",
    day: "numeric",
    year: sameYear ? undefined : "numeric",
  });
}
