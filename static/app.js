// The chat page. The protocol (socket, reconnects, resumes, HTTP fallback, tokens) is the
// client module's; this file wires it to the page's parts: the conversation list, the
// pickers, the thread of messages, the composer and the connection status.

import { ChatGatewayClient } from "./chat-gateway.js";
import { api } from "./api.js";
import { Branches } from "./branches.js";
import { ConversationList } from "./conversations.js";
import { Pickers } from "./pickers.js";
import { Thread } from "./thread.js";
import { TokenPrompt } from "./token.js";

// The open conversation, per tab: a reload comes back to it (and to its running answer).
const OPEN_KEY = "chat-gateway.conversation";

const $ = (id) => document.getElementById(id);
const ui = {
  chat: $("chat"),
  sidebar: $("sidebar"),
  backdrop: $("backdrop"),
  menu: $("menu"),
  closeDrawer: $("close-drawer"),
  status: $("status"),
  statusText: $("status-text"),
  newChat: $("new-chat"),
  composer: $("composer"),
  input: $("input"),
  send: $("send"),
  stop: $("stop"),
};

const prompt = new TokenPrompt(
  { form: $("token-form"), input: $("token-input"), hint: $("token-hint") },
  {
    onShow: () => setSignedIn(false),
    onHide: () => setSignedIn(true),
    onToken: () => {
      if (client.state === "closed") start();
    },
  },
);

const client = new ChatGatewayClient({
  token: prompt.token ?? undefined,
  getToken: prompt.getToken,
});

const pickers = new Pickers(
  { box: $("pickers"), agent: $("agent-picker"), model: $("model-picker") },
  client,
);

const thread = new Thread(
  { scroller: $("scroller"), list: $("messages"), empty: $("empty") },
  {
    labelFor: (message) => pickers.labelFor(message),
    onRegenerate: regenerate,
    onEdit: (message, item) => branches.edit(message, item),
    onSwitch: (messageId) => branches.switchTo(messageId),
    onFork: (messageId) => branches.fork(messageId),
    onDelete: (messageId) => branches.remove(messageId),
  },
);

const branches = new Branches(client, ui.composer, {
  conversation: () => conversationId,
  reopen: (id) => openConversation(id),
  listChanged: () => conversations.refresh(),
  putText: (text) => {
    ui.input.value = text;
    autosize();
    ui.input.focus();
  },
  notice: (text) => thread.addNotice(text),
});

const conversations = new ConversationList(
  { list: $("conversation-list"), more: $("load-more"), status: $("list-status") },
  client,
  {
    onOpen: (id) => {
      closeDrawer();
      if (id !== conversationId) openConversation(id);
    },
    onRenamed: (id, title) => {
      if (id === conversationId) showTitle(title);
    },
    onDeleted: (id) => {
      if (id === conversationId) newChat();
    },
  },
);

/** @type {string | null} */
let conversationId = null;
/** The answer being followed on screen: its run and where it is drawn. */
let active = null;
let opening = 0; // bumped per openConversation: a slow answer for an older click is dropped

// Connection status.

const STATUS = {
  connecting: () => ["connecting", "Connecting…"],
  connected: () => ["connected", "Connected"],
  // `error`: the gateway refused the socket (too many open for this user) and said how long
  // to wait.
  reconnecting: ({ delay, error }) => [
    "connecting",
    (error ? `${error.message} ` : "") +
      (delay >= 1000 ? `Reconnecting in ${Math.round(delay / 1000)} s…` : "Reconnecting…"),
  ],
  // The gateway closed the unused socket; the next question opens another.
  idle: () => ["connected", "Connected"],
  // WebSockets cannot get through (a proxy, say): answers still stream, over HTTP.
  "offline-http": () => ["http", "Connected over HTTP"],
  closed: ({ error }) => ["disconnected", error ? "Signed out" : "Disconnected"],
};

client.addEventListener("statechange", ({ detail }) => {
  const [state, text] = STATUS[detail.state](detail);
  setStatus(state, text);
  // The client gave up on the token (refused, and no better one came): ask for another.
  if (detail.state === "closed" && detail.error) prompt.ask();
  // Back after a failure to load the list (the gateway was down, say): try again.
  if (detail.state === "connected" && !conversations.loaded) conversations.load();
  updateControls();
});

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.statusText.textContent = text;
  const who = client.user ? `Signed in as ${client.user}.` : "";
  const how = state === "http" ? " WebSockets cannot get through; answers stream over HTTP." : "";
  ui.statusText.title = (who + how).trim(); // on the text: the status itself needs no name
}

function setSignedIn(signedIn) {
  document.body.classList.toggle("signed-out", !signedIn);
  ui.composer.hidden = !signedIn;
  ui.newChat.hidden = !signedIn;
  if (!signedIn) setStatus("disconnected", "Waiting for a token");
}

function updateControls() {
  // Not connected yet is no reason to wait: the client queues the message and sends it over
  // whichever transport opens first.
  ui.send.disabled = active !== null;
  ui.send.hidden = active !== null;
  ui.stop.hidden = active === null;
}

// Answers.

// News about an answer that is not part of it, e.g. that it cannot be saved right now.
client.addEventListener("notice", ({ detail }) => {
  if (active?.run === detail.run) active.answer.addNote(detail.notice.message);
});

// Another tab or device of the user, on any instance: the list follows at once.
client.addEventListener("activity", ({ detail }) => {
  conversations.refresh();
  const here = detail.conversation_id === conversationId;
  if (detail.event === "conversation.deleted" && here) newChat();
  // A question asked elsewhere in the open conversation (this tab's own answer is `active`
  // from the moment it is sent): show it, then its answer as it streams.
  if (detail.event === "generation.started" && here && !active) {
    thread.addQuestion(detail.message?.content ?? "");
    follow(client.attach(detail.generation_id, { after: 0 }), thread.addAnswer("…"));
  }
});

/**
 * Draws a run's events into an answer until its final event. Leaving the conversation stops
 * following the run (see leave) but not the answer: the gateway finishes and stores it.
 * `question`: the message a completion asks; if it never started an answer (not sent, or
 * refused), it goes back into the empty message box, so nothing typed is lost. Resolves to
 * whether the answer started, once it has ended.
 */
async function follow(run, answer, question = null) {
  active = { run, answer };
  answer.beginStreaming();
  updateControls();
  let started = false;
  try {
    for await (const event of run) {
      if (event.type === "start") {
        started = true;
        // An answer is stored under its generation's id, with `msg_` for `gen_`.
        answer.messageId = `msg_${event.generation_id.slice(4)}`;
        answer.setLabel(pickers.labelFor(event));
        adopt(event.conversation_id);
        conversations.refresh();
      } else if (event.type === "chunk") {
        answer.append(event.content);
      } else if (event.type === "tool_call") {
        answer.toolCall(event);
      } else if (event.type === "tool_result") {
        answer.toolResult(event);
      } else if (event.type === "done") {
        answer.finish(event);
      } else if (event.type === "error") {
        answer.end(event.retryable ? `${event.message} Please try again.` : event.message, true);
      }
    }
  } catch (error) {
    // The client gave up on the token. The answer goes on at the gateway; once signed in
    // again, opening the conversation shows it.
    const signedOut = error.code === "unauthorized";
    const why = started ? "Signed out before the answer was complete." : "Not sent: signed out.";
    answer.end(signedOut ? why : error.message, true);
  }
  if (active?.run !== run) return false; // left meanwhile: the answer is no longer on screen
  if (question !== null && !started) {
    if (answer.streaming) answer.end("Not sent."); // stopped before it was sent
    keepText(question);
  }
  // An attach to a generation that had already ended, with nothing after `after`.
  if (answer.streaming) answer.end();
  active = null;
  thread.offerRegenerate();
  updateControls();
  conversations.refresh().then(() => showTitle());
  return started;
}

function send(message) {
  if (!message.trim() || ui.send.disabled) return;
  const request = { message, ...pickers.choice() };
  if (conversationId) request.conversationId = conversationId;
  const edit = conversationId ? branches.takeEdit() : null;
  if (edit) {
    request.parentId = edit.parentId;
    thread.cutFrom(edit.item);
  }
  thread.addQuestion(message);
  const answer = thread.addAnswer(pickers.expectedLabel());
  const answered = follow(client.complete(request), answer, message);
  if (edit) reshowAfter(answered);
}

/**
 * Once a new version is answered, shows the conversation again, with its versions; a refused
 * one (`conversation_full`, say) stays on screen with its reason.
 */
function reshowAfter(answered) {
  const id = conversationId;
  answered.then((started) => {
    if (started && !active && id && conversationId === id) openConversation(id);
  });
}

/** Puts a message that was not sent back into the box, unless something new is there. */
function keepText(message) {
  if (ui.input.value.trim()) return;
  ui.input.value = message;
  autosize();
}

function stop() {
  active?.run.cancel();
}

/** A new answer to the last question, beside the last answer (kept as another version). */
function regenerate() {
  if (active || thread.lastQuestion === null) return;
  const answerId = thread.lastAnswerId;
  if (!conversationId || !answerId) return send(thread.lastQuestion);
  thread.dropLastAnswer();
  const run = client.complete({ regenerate: answerId, conversationId, ...pickers.choice() });
  reshowAfter(follow(run, thread.addAnswer(pickers.expectedLabel())));
}

// Conversations.

/** Makes `id` the open conversation: remembered for a reload, marked in the list. */
function adopt(id) {
  if (id === conversationId) return;
  conversationId = id;
  if (id) sessionStorage.setItem(OPEN_KEY, id);
  else sessionStorage.removeItem(OPEN_KEY);
  conversations.setActive(id);
  showTitle();
}

/** Names the open conversation in the tab's title (the list may not have it yet). */
function showTitle(title = conversationId && conversations.titleOf(conversationId)) {
  document.title = title ? `${title} · Chat` : "Chat";
}

/** Stops following the answer on screen, which goes on at the gateway. */
function leave() {
  branches.cancel();
  if (!active) return;
  const { run } = active;
  active = null;
  run.return(); // ends its for-await loop; run.cancel() would stop the answer itself
  updateControls();
}

function newChat() {
  leave();
  opening += 1;
  adopt(null);
  thread.clear();
  closeDrawer();
  ui.input.focus();
}

/**
 * Shows a stored conversation. If its latest answer is still being written (a reload in the
 * middle of it, or one started in another tab), follows it from its first event: the stored
 * messages do not have it yet.
 */
async function openConversation(id) {
  leave();
  const ticket = ++opening;
  adopt(id);
  thread.clear();
  let conversation;
  try {
    conversation = await api(client, `/conversations/${encodeURIComponent(id)}`);
  } catch (error) {
    if (ticket !== opening) return;
    if (error.status === 404) {
      adopt(null); // deleted or expired since: start afresh
      conversations.refresh();
    } else {
      thread.addNotice(`Could not open the conversation. ${error.message}`);
    }
    return;
  }
  if (ticket !== opening) return;
  const generation = conversation.generation;
  // A running answer belongs here only when the path ends at its question: after a switch to
  // another branch, it goes on there, unseen.
  const onPath = conversation.messages.at(-1)?.role === "user";
  const running = generation?.status === "running" && onPath ? generation.id : null;
  // The running answer is drawn from its events, in place of anything stored for it.
  const messages = conversation.messages.filter((m) => !running || m.generation_id !== running);
  thread.showStored(messages);
  const lastAnswer = messages.findLast((m) => m.role === "assistant");
  if (lastAnswer) pickers.adopt(lastAnswer);
  showTitle(conversation.title);
  // A long conversation comes a page at a time, the newest first: older pages on request.
  if (conversation.next_cursor) offerEarlier(id, ticket, conversation.next_cursor);
  if (running) follow(client.attach(running, { after: 0 }), thread.addAnswer("…"));
}

/** Offers the open conversation's messages before the page `cursor` ends, while it is open. */
function offerEarlier(id, ticket, cursor) {
  let before = cursor;
  thread.offerEarlier(async () => {
    const path = `/conversations/${encodeURIComponent(id)}?cursor=${encodeURIComponent(before)}`;
    const page = await api(client, path);
    if (ticket !== opening) return null;
    before = page.next_cursor;
    return { messages: page.messages, more: before !== null };
  });
}

// The conversation list is a drawer on narrow screens.

const narrow = matchMedia("(max-width: 60rem)");

function openDrawer() {
  document.body.classList.add("drawer-open");
  ui.menu.setAttribute("aria-expanded", "true");
  ui.backdrop.hidden = false;
  ui.chat.inert = true; // keyboard and screen readers stay in the drawer while it covers
  (ui.sidebar.querySelector("[aria-current]") ?? ui.closeDrawer).focus();
}

function closeDrawer() {
  if (!document.body.classList.contains("drawer-open")) return;
  document.body.classList.remove("drawer-open");
  ui.menu.setAttribute("aria-expanded", "false");
  ui.backdrop.hidden = true;
  ui.chat.inert = false;
  if (narrow.matches) ui.menu.focus();
}

ui.menu.addEventListener("click", openDrawer);
ui.closeDrawer.addEventListener("click", closeDrawer);
ui.backdrop.addEventListener("click", closeDrawer);
ui.sidebar.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeDrawer();
});
narrow.addEventListener("change", () => closeDrawer());

// The composer.

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const message = ui.input.value;
  if (!message.trim() || ui.send.disabled) return;
  send(message);
  ui.input.value = "";
  autosize();
});

ui.input.addEventListener("keydown", (event) => {
  // isComposing: Enter also confirms IME input (Japanese, Chinese…) and must not send then.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  } else if (event.key === "Escape" && active) {
    stop();
  }
});

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${ui.input.scrollHeight}px`;
}

ui.input.addEventListener("input", autosize);
// "5 min ago" grows old: redraw the list's times now and then.
setInterval(() => conversations.retime(), 60_000);
ui.stop.addEventListener("click", stop);
ui.newChat.addEventListener("click", newChat);

// Start: connect, fill the pickers and the list, and reopen the conversation of this tab.

function start() {
  client.connect().catch(() => {}); // a refusal shows in the status and the token form
  pickers.load().catch(() => {}); // without them, requests use the gateway's defaults
  conversations.load();
  const saved = sessionStorage.getItem(OPEN_KEY);
  if (saved) openConversation(saved);
}

start();
