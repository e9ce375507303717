// The chat page: one WebSocket to /ws (protocol chat-gateway.v1), plain text only.

const TOKEN_KEY = "chat-gateway.token";
const PING_MS = 25_000;
const MAX_BACKOFF_MS = 30_000;

const CLOSE_REASONS = {
  1006: "The connection was lost.",
  1009: "A message was too large for the server.",
  1012: "The server is restarting.",
  4008: "The connection fell behind and was closed.",
  4401: "The token was refused.",
  4408: "Signing in took too long.",
};

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), statusText: $("status-text"), newChat: $("new-chat"),
  scroller: $("scroller"), tokenForm: $("token-form"), tokenInput: $("token-input"),
  empty: $("empty"), messages: $("messages"),
  composer: $("composer"), input: $("input"), send: $("send"), stop: $("stop"),
};

let token = takeToken();
let socket = null;
let connected = false;
let conversationId = null;
let running = null; // { id, item, body } of the answer being streamed
let retries = 0;
let retryTimer = 0;
let counter = 0;

// The fragment never reaches the server, but it would linger in history and screenshots.
function takeToken() {
  const match = location.hash.match(/[#&]token=([^&]+)/);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function setStatus(state, text) {
  // A longer status can wrap and grow the header, which would push the last line out of view.
  const nearBottom = isNearBottom();
  ui.status.dataset.state = state;
  ui.statusText.textContent = text;
  if (nearBottom) scrollToBottom();
}

function updateControls() {
  ui.send.disabled = !connected || running !== null;
  ui.stop.hidden = running === null;
  ui.send.hidden = running !== null;
  ui.empty.hidden = ui.messages.childElementCount > 0 || !token;
}

function askForToken(hint) {
  setStatus("disconnected", hint || "Not signed in.");
  ui.tokenForm.hidden = false;
  ui.composer.hidden = true;
  ui.newChat.hidden = true;
  updateControls();
  ui.tokenInput.focus();
}

function connect() {
  clearTimeout(retryTimer);
  if (!token) return askForToken();
  ui.tokenForm.hidden = true;
  ui.composer.hidden = false;
  ui.newChat.hidden = false;
  setStatus("connecting", retries ? "Reconnecting…" : "Connecting…");
  let ws;
  try {
    // The token rides in the subprotocol list so it never appears in a URL or a log line.
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
      ["chat-gateway.v1", `bearer.${token}`]);
  } catch {
    return forgetToken("That token has characters a token cannot have.");
  }
  socket = ws;
  ws.onmessage = (event) => handleFrame(JSON.parse(event.data));
  ws.onclose = (event) => handleClose(ws, event);
}

function forgetToken(hint) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  askForToken(hint);
}

function handleFrame(frame) {
  if (frame.type === "ready") {
    retries = 0;
    connected = true;
    setStatus("connected", `Connected as ${frame.user}`);
    updateControls();
    return;
  }
  if (frame.type === "pong") return;
  // Frames for an answer we abandoned (New chat) may still arrive; they belong to nothing.
  const mine = running !== null && frame.id === running.id;
  if (frame.type === "start" && mine) {
    conversationId = frame.conversation_id;
    running.item.querySelector(".who").textContent = frame.model;
  } else if (frame.type === "chunk" && mine) {
    const nearBottom = isNearBottom();
    running.body.textContent += frame.content;
    if (nearBottom) scrollToBottom();
  } else if (frame.type === "done" && mine) {
    const notes = { cancelled: "Stopped.", length: "Cut off at the length limit." };
    finish(notes[frame.finish_reason]);
  } else if (frame.type === "error") {
    const text = frame.retryable ? `${frame.message} Please try again.` : frame.message;
    if (mine && frame.done) finish(text, true);
    else if (frame.id === null || frame.id === undefined || mine) addNotice(text);
  }
}

function handleClose(ws, event) {
  if (ws !== socket) return;
  socket = null;
  connected = false;
  if (running) finish("The connection closed before the answer was complete.", true);
  const reason = event.reason || CLOSE_REASONS[event.code] || `Disconnected (code ${event.code}).`;
  // A refused token will be refused again: ask for a new one instead of retrying.
  if (event.code === 4401) return forgetToken(`${reason} Paste a new token to continue.`);
  const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** retries);
  retries += 1;
  setStatus("disconnected", `${reason} Retrying in ${Math.round(delay / 1000)} s.`);
  retryTimer = setTimeout(connect, delay);
  updateControls();
}

function addMessage(role, label, text) {
  const item = document.createElement("li");
  item.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = label;
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = text;
  item.append(who, body);
  ui.messages.append(item);
  updateControls();
  scrollToBottom();
  return { item, body };
}

function addNote(item, text, isError) {
  const note = document.createElement("p");
  note.className = isError ? "note error" : "note";
  note.textContent = text;
  item.append(note);
}

function addNotice(text) {
  const item = document.createElement("li");
  item.className = "msg notice";
  addNote(item, text, true);
  ui.messages.append(item);
  updateControls();
  scrollToBottom();
}

function finish(note, isError = false) {
  running.item.classList.remove("streaming");
  running.item.removeAttribute("aria-busy");
  if (!running.body.textContent && !note) note = "(No answer.)";
  if (note) addNote(running.item, note, isError);
  running = null;
  updateControls();
  scrollToBottom();
}

function send() {
  const message = ui.input.value;
  if (!message.trim() || !connected || running) return;
  const id = `m${++counter}-${Date.now().toString(36)}`;
  const frame = { type: "completion", id, message };
  if (conversationId) frame.conversation_id = conversationId;
  socket.send(JSON.stringify(frame));
  addMessage("user", "You", message);
  running = { id, ...addMessage("assistant", "Assistant", "") };
  // aria-busy keeps screen readers from announcing every streamed word.
  running.item.classList.add("streaming");
  running.item.setAttribute("aria-busy", "true");
  ui.input.value = "";
  autosize();
  updateControls();
}

function stop() {
  if (running && connected) socket.send(JSON.stringify({ type: "cancel", id: running.id }));
}

function newChat() {
  stop();
  running = null;
  conversationId = null;
  ui.messages.replaceChildren();
  updateControls();
  ui.input.focus();
}

function isNearBottom() {
  const s = ui.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

function scrollToBottom() {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${ui.input.scrollHeight}px`;
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
ui.input.addEventListener("keydown", (event) => {
  // isComposing: Enter also confirms IME input (Japanese, Chinese...) and must not send then.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
ui.input.addEventListener("input", autosize);
ui.stop.addEventListener("click", stop);
ui.newChat.addEventListener("click", newChat);
ui.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  token = ui.tokenInput.value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  ui.tokenInput.value = "";
  retries = 0;
  connect();
});
// Proxies drop WebSockets that stay silent; a ping now and then keeps the line open.
setInterval(() => {
  if (connected) socket.send(JSON.stringify({ type: "ping" }));
}, PING_MS);
// Back online: no reason to sit out the rest of a long backoff.
addEventListener("online", () => {
  if (!socket && token) {
    retries = 0;
    connect();
  }
});

connect();
