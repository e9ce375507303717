// A client for the chat-gateway wire protocol v1 (docs/protocol.md), as one dependency-free
// ES module for browsers and Node 20+. Guide: docs/client-js.md.
//
//   import { ChatGatewayClient } from "/static/chat-gateway.js";
//   const client = new ChatGatewayClient({ url: location.origin, getToken });
//   const run = client.complete({ message: "Hello" });
//   for await (const event of run) if (event.type === "chunk") output.append(event.content);
//
// What it hides: one multiplexed WebSocket with heartbeats, reconnects with backoff that
// resume every unfinished answer from the last seq seen (waiting as long as the gateway asks
// when it refuses a connection), token renewal, a fallback to HTTP streaming when WebSockets
// cannot get through (while the socket is probed again in the background), and a bounded
// queue for messages sent while neither is open.

/**
 * @typedef {"connecting" | "connected" | "reconnecting" | "idle" | "offline-http"
 *   | "closed"} ConnectionState
 *
 * @typedef {object} ChatGatewayOptions
 * @property {string} [url] The gateway's base URL, e.g. `https://chat.example.com`. Default: the
 *   page's origin. `/ws` and the HTTP endpoints are found under it.
 * @property {string} [wsUrl] The WebSocket URL, when it is not `<url>/ws` (ws: or wss:).
 * @property {string} [httpUrl] The base of the HTTP endpoints, when it is not `url`.
 * @property {string} [token] The token to start with.
 * @property {() => Promise<string> | string} [getToken] Returns a fresh token. Called when there
 *   is no token yet, shortly before the current one expires, and when the gateway refuses it.
 *   Without it, a refused token is final.
 * @property {"subprotocol" | "frame"} [auth] How the socket carries the token: in the
 *   subprotocol list (default) or in a first `auth` frame. Never in the URL.
 * @property {"auto" | "websocket" | "http"} [transport] `auto` (default) falls back to HTTP when
 *   WebSockets cannot be opened; `websocket` never falls back; `http` never tries a socket.
 * @property {number} [pingInterval] Milliseconds between heartbeat pings (default 25000).
 * @property {number} [pongTimeout] Milliseconds without any frame after a ping before the socket
 *   counts as dead (default 10000).
 * @property {number} [reconnectDelay] First reconnect delay in ms (default 500); doubles per
 *   failed attempt, with jitter.
 * @property {number} [maxReconnectDelay] Cap on the reconnect delay in ms (default 30000).
 * @property {number} [fallbackAfter] Sockets in a row that fail to open before the HTTP
 *   fallback is considered (default 1: a browser cannot tell a refused upgrade from a network
 *   failure, so the first one that fails while `/healthz` answers means WebSockets are
 *   blocked; the socket is then probed again in the background).
 * @property {number} [maxQueued] Completions that may wait for a transport at once (default
 *   16); one more ends at once with a `not_sent` error event.
 * @property {number} [queueTimeout] How long a completion may wait for a transport, in ms
 *   (default 30000; 0: without limit); then it ends with a `not_sent` error event.
 * @property {number} [refreshBeforeExpiry] How long before the token's expiry to renew it and
 *   reconnect, in ms (default 60000; at most half the token's lifetime).
 * @property {number} [maxFrameBytes] The gateway's MAX_FRAME_BYTES (default 1048576). A larger
 *   completion ends with a `bad_request` error event instead of being sent: the gateway would
 *   close the socket, and every reconnect would send it again.
 * @property {typeof WebSocket} [WebSocket] A WebSocket constructor (default: the global one),
 *   e.g. from the `ws` package.
 * @property {typeof fetch} [fetch] A fetch function (default: the global one).
 *
 * @typedef {object} CompletionRequest The fields of docs/protocol.md §4.1, in camelCase or as
 *   on the wire (`conversationId` or `conversation_id`). Unknown fields are sent as they are.
 * @property {string} [message] Required, unless `regenerate` is sent.
 * @property {string} [conversationId]
 * @property {string} [parentId] The message to answer after (default: the active leaf); the
 *   parent of a user message edits it, `""` stands for a new first message.
 * @property {string} [regenerate] An answer's id (`msg_…`): a new answer beside it, to the
 *   same user message; send no `message`.
 * @property {string} [model]
 * @property {string} [agent]
 * @property {number} [temperature]
 * @property {number} [maxTokens]
 * @property {Array<string | {content: string, title?: string, url?: string}>} [sources]
 * @property {Array<{role: string, content: string}>} [conversationHistory]
 * @property {string} [projectId]
 * @property {string} [idempotencyKey] Default: a random key, so that a completion resent after
 *   a reconnect re-attaches to the answer it started instead of starting a second one.
 *
 * @typedef {object} GatewayEvent One event of docs/protocol.md §5: `type` is `start`, `chunk`,
 *   `tool_call`, `tool_result`, `done` or `error`, with the fields of its type. An `error` for
 *   a request that started no generation (§6.1) has no `seq` or `generation_id`.
 * @property {string} type
 * @property {string | null} id
 * @property {string} [generation_id]
 * @property {string} [conversation_id]
 * @property {number} [seq]
 * @property {string} [content]
 * @property {boolean} done
 * @property {string} [finish_reason]
 * @property {string} [code]
 * @property {string} [message]
 * @property {string} [error] The same text as `message`.
 * @property {boolean} [retryable]
 * @property {number} [retry_after] On an `error`: seconds to wait before sending it again, when
 *   the gateway knows (a per-user limit, the model's API asking to wait).
 *
 * @typedef {object} GatewayNotice A `notice` frame (docs/protocol.md §5): news about a
 *   generation that is not one of its events (e.g. its answer cannot be saved right now). It
 *   has no `seq`, is never replayed, and the run goes on to its final event either way.
 * @property {"notice"} type
 * @property {string} id The run's id.
 * @property {string} generation_id
 * @property {string} conversation_id
 * @property {string} code `persistence_degraded`, `persistence_lost`, `store_unreachable`, or a
 *   code added later.
 * @property {string} message
 */

const SUBPROTOCOL = "chat-gateway.v1";
const OPEN = 1; // WebSocket.OPEN, which a substituted constructor may not define
const MAX_TIMER_MS = 2 ** 31 - 1; // longer setTimeout delays fire at once
const MAX_TOKEN_RENEWALS = 3; // refusals in a row before renewing is hopeless
const CLOSE_IDLE = 1000; // the gateway closes a socket unused for WS_IDLE_TIMEOUT with it
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_TOO_MANY_CONNECTIONS = 4429;

const DEFAULTS = {
  auth: "subprotocol",
  transport: "auto",
  pingInterval: 25_000,
  pongTimeout: 10_000,
  reconnectDelay: 500,
  maxReconnectDelay: 30_000,
  fallbackAfter: 1,
  maxQueued: 16,
  queueTimeout: 30_000,
  refreshBeforeExpiry: 60_000,
  maxFrameBytes: 1_048_576,
};

// The camelCase spellings of wire fields; anything else is sent under its own name.
const WIRE_NAMES = {
  conversationId: "conversation_id",
  parentId: "parent_id",
  maxTokens: "max_tokens",
  projectId: "project_id",
  conversationHistory: "conversation_history",
  toolChoice: "tool_choice",
  idempotencyKey: "idempotency_key",
};

/**
 * An error that ends the client or a run (`code` is `unauthorized` or `closed`), or that says
 * why a reconnect waits (`rate_limited`, with `retryAfter`).
 */
export class ChatGatewayError extends Error {
  /**
   * @param {string} message
   * @param {{code: string, cause?: unknown, retryAfter?: number}} details
   */
  constructor(message, { code, cause, retryAfter }) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "ChatGatewayError";
    this.code = code;
    /** Seconds the gateway asked to wait, when it said. */
    this.retryAfter = retryAfter ?? null;
  }
}

/**
 * One completion or attached generation: an async iterator of its events, ending after the
 * final one (`done` or `error`). Iterate it once. Leaving the loop early stops following the
 * generation but does not stop it; call `cancel()` for that.
 */
export class Run {
  /** @param {ChatGatewayClient} client @param {string} id */
  constructor(client, id) {
    /** The `id` the run's frames carry on the socket (and in HTTP bodies). */
    this.id = id;
    /** @type {string | null} Known from the first event (or given to `attach`). */
    this.generationId = null;
    /** @type {string | null} Known from the first event; send it with the next message. */
    this.conversationId = null;
    /** @type {GatewayNotice[]} The notices received so far, one per code at most. */
    this.notices = [];
    this._client = client;
    this._lastSeq = 0; // the highest seq received: resumes start after it
    /** @type {Record<string, unknown> | null} */
    this._body = null; // the completion to (re)send until the generation id is known
    this._sent = false; // handed to a transport at least once: no longer queued
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._queueTimer = undefined; // ends the run if no transport takes it in time
    this._detached = false; // the caller stopped following it before the gateway had it
    this._transport = "ws";
    /** @type {WebSocket | null} */
    this._socket = null; // the socket the run was last sent on
    this._cancelRequested = false;
    this._cancelSent = false;
    /** @type {AbortController | null} */
    this._abort = null;
    /** @type {(() => void) | null} */
    this._wake = null; // ends a backoff sleep early
    this._ended = false;
    /** @type {GatewayEvent[]} */
    this._queue = [];
    /** @type {Array<{resolve: Function, reject: Function}>} */
    this._waiters = [];
    /** @type {Error | null} */
    this._error = null;
  }

  /** The last `seq` seen: pass it as `after` to attach to the rest elsewhere. */
  get lastSeq() {
    return this._lastSeq;
  }

  /**
   * Stops the generation. It ends with a `done` event whose `finish_reason` is `cancelled`
   * (unless it was already finishing). A completion not yet sent just ends, with no events.
   */
  cancel() {
    this._client._cancel(this);
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** @returns {Promise<IteratorResult<GatewayEvent, undefined>>} */
  next() {
    if (this._queue.length > 0) {
      const value = /** @type {GatewayEvent} */ (this._queue.shift());
      return Promise.resolve({ value, done: false });
    }
    if (this._error) return Promise.reject(this._error);
    if (this._ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /** Called when a `for await` loop is left early. */
  return() {
    this._client._forget(this);
    return Promise.resolve({ value: undefined, done: /** @type {const} */ (true) });
  }

  /** @param {GatewayEvent} event */
  _push(event) {
    const waiter = this._waiters.shift();
    if (waiter) waiter.resolve({ value: event, done: false });
    else this._queue.push(event);
  }

  /** @param {Error} [error] */
  _end(error) {
    if (this._ended) return;
    this._ended = true;
    this._error = error ?? null;
    clearTimeout(this._queueTimer);
    this._abort?.abort();
    this._wake?.();
    for (const waiter of this._waiters.splice(0)) {
      if (error) waiter.reject(error);
      else waiter.resolve({ value: undefined, done: true });
    }
  }
}

/**
 * The connection to one gateway, shared by every run. Dispatches `statechange` events whose
 * `detail` is `{state, previous, delay?, error?}` (`delay`: ms until the next attempt;
 * `error`: why it closed, or why a reconnect waits), and `notice` events whose `detail` is
 * `{run, notice}` for each notice a run receives.
 */
export class ChatGatewayClient extends EventTarget {
  /** @param {ChatGatewayOptions} options */
  constructor(options) {
    super();
    const base = String(options.url ?? globalThis.location?.origin ?? "").replace(/\/+$/, "");
    if (!base && !(options.httpUrl && options.wsUrl)) {
      throw new TypeError("ChatGatewayClient needs a url.");
    }
    this._options = { ...DEFAULTS, ...options };
    this._httpUrl = (options.httpUrl ?? base).replace(/\/+$/, "");
    this._wsUrl = options.wsUrl ?? `${base.replace(/^http/, "ws")}/ws`;
    if (!options.token && !options.getToken) {
      throw new TypeError("ChatGatewayClient needs a token or a getToken callback.");
    }
    /** @type {string | null} */
    this._token = options.token ?? null;
    this._tokenSince = Date.now();
    /** @type {number | null} */
    this._expiresAt = null; // ms, from the ready frame
    /** @type {Promise<void> | null} */
    this._renewing = null;
    this._renewals = 0; // tokens fetched since the last one the gateway accepted
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));

    /** @type {ConnectionState} */
    this._state = "closed";
    /** @type {string | null} The token's `sub`, from the gateway's ready frame. */
    this.user = null;
    /** @type {Map<string, Run>} every unfinished run, by id */
    this._runs = new Map();
    this._counter = 0;
    this._mode = this._options.transport === "http" ? "http" : "ws";
    /** @type {WebSocket | null} */
    this._ws = null;
    /** @type {WebSocket | null} */
    this._retiring = null; // the previous socket during a token rotation
    this._ready = false;
    this._attempt = 0;
    this._unopened = 0; // sockets in a row that failed before the handshake completed
    this._holdUntil = 0; // ms: no reconnect before this, however eager (the gateway asked)
    /** @type {GatewayEvent | null} a connection-level error frame on the current socket */
    this._refusal = null;
    this._session = 0; // bumped by close(): late async work of an older session stops
    /** @type {Record<string, any>} */
    this._timers = {};
    /** @type {Promise<void> | null} */
    this._connected = null;
    /** @type {{resolve: () => void, reject: (e: Error) => void} | null} */
    this._connectedHooks = null;
    this._onOnline = () => {
      // Back on the network: no reason to sit out the rest of a long backoff, unless the
      // gateway itself asked for the wait.
      const held = Date.now() < this._holdUntil;
      if (this._state === "reconnecting" && !this._ws && !held) this._open();
    };
  }

  /** @type {ConnectionState} */
  get state() {
    return this._state;
  }

  /**
   * Connects (once; later calls return the same promise, until the client is closed or goes
   * idle). Resolves when completions can be sent (a socket is ready, or the HTTP fallback is
   * in use); rejects with a ChatGatewayError when the token is refused for good. `complete`
   * and `attach` call it.
   * @returns {Promise<void>}
   */
  connect() {
    const stopped = this._state === "closed" || this._state === "idle";
    if (this._connected && !stopped) return this._connected;
    this._attempt = this._unopened = this._renewals = 0;
    this._connected = new Promise((resolve, reject) => {
      this._connectedHooks = { resolve, reject };
    });
    this._connected.catch(() => {}); // also reported to runs and by statechange
    globalThis.addEventListener?.("online", this._onOnline);
    if (this._mode === "http") this._useHttp();
    else {
      this._setState("connecting");
      this._open();
    }
    return this._connected;
  }

  /**
   * Starts a completion.
   * @param {CompletionRequest} request
   * @returns {Run}
   */
  complete(request) {
    const run = new Run(this, this._newId());
    /** @type {Record<string, unknown>} */
    const body = {};
    for (const [key, value] of Object.entries(request)) {
      const name = WIRE_NAMES[/** @type {keyof WIRE_NAMES} */ (key)] ?? key;
      if (value !== undefined) body[name] = value;
    }
    for (const reserved of ["type", "id", "stream"]) delete body[reserved];
    body.idempotency_key ??= randomId(16);
    run._body = body;
    const limit = this._options.maxFrameBytes;
    const bytes = new TextEncoder().encode(JSON.stringify(body)).length;
    if (bytes > limit) {
      const message = `The request has ${bytes} bytes; the gateway takes at most ${limit}.`;
      run._push(refusal(run.id, "bad_request", message, false));
      run._end();
      return run;
    }
    const { maxQueued } = this._options;
    if (this._mode === "ws" && !this._ready && this._queued() >= maxQueued) {
      run._push(notSent(run.id, `${maxQueued} messages are already waiting for the connection.`));
      run._end();
      return run;
    }
    this._track(run);
    if (!run._sent) this._expireQueued(run);
    return run;
  }

  /** How many completions wait for a transport: neither the socket nor HTTP has had them. */
  _queued() {
    let count = 0;
    for (const run of this._runs.values()) if (run._body && !run._sent) count += 1;
    return count;
  }

  /**
   * Ends a completion that no transport takes within `queueTimeout`: the caller learns it was
   * not sent (and can say so, and keep the text) instead of waiting without end.
   * @param {Run} run
   */
  _expireQueued(run) {
    const { queueTimeout } = this._options;
    if (!(queueTimeout > 0)) return;
    run._queueTimer = setTimeout(() => {
      if (run._sent || run._ended) return;
      const seconds = queueTimeout / 1000;
      this._deliver(run, notSent(run.id, `The gateway could not be reached within ${seconds} s.`));
    }, Math.min(MAX_TIMER_MS, queueTimeout));
  }

  /**
   * Follows an existing generation, e.g. the running one `GET /conversations/{id}` names after
   * a page reload: every event after `after` (0: all of it), then the live ones. If the
   * generation has already ended and `after` is at its end, the run ends with no events.
   * @param {string} generationId
   * @param {{after?: number}} [options]
   * @returns {Run}
   */
  attach(generationId, { after = 0 } = {}) {
    const run = new Run(this, this._newId());
    run.generationId = generationId;
    run._lastSeq = after;
    this._track(run);
    return run;
  }

  /**
   * `fetch` against the gateway's HTTP API with the current token, renewed (and the request
   * sent again) when the gateway refuses it: e.g. `client.fetch("/conversations/" + id)`.
   * @param {string} path
   * @param {RequestInit} [init]
   * @returns {Promise<Response>}
   */
  async fetch(path, init = {}) {
    for (;;) {
      const token = await this._freshToken();
      const headers = new Headers(init.headers);
      headers.set("Authorization", `Bearer ${token}`);
      const response = await this._fetch(this._httpUrl + path, { ...init, headers });
      if (response.status !== 401) {
        if (response.ok) this._renewals = 0;
        return response;
      }
      const reason = (await response.json().catch(() => ({}))).detail ?? "401 Unauthorized";
      await this._renew(token, reason);
    }
  }

  /**
   * Makes the newest descendant of a message the conversation's active leaf (the path that
   * `GET /conversations/{id}` shows and the next message continues).
   * @param {string} conversationId
   * @param {string} messageId
   * @returns {Promise<string>} The new active leaf's id.
   */
  async switchBranch(conversationId, messageId) {
    const body = JSON.stringify({ active_message_id: messageId });
    const answer = await this._json("PATCH", `/conversations/${conversationId}`, body);
    return answer.active_message_id;
  }

  /**
   * Starts a new conversation holding the path down to a message.
   * @param {string} conversationId
   * @param {string} messageId
   * @returns {Promise<string>} The new conversation's id.
   */
  async fork(conversationId, messageId) {
    const body = JSON.stringify({ message_id: messageId });
    return (await this._json("POST", `/conversations/${conversationId}/fork`, body)).id;
  }

  /**
   * Deletes a message and everything below it; an answer running there is stopped.
   * @param {string} conversationId
   * @param {string} messageId
   */
  async deleteMessage(conversationId, messageId) {
    await this._json("DELETE", `/conversations/${conversationId}/messages/${messageId}`);
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {string} [body]
   * @returns {Promise<any>} The answer's JSON (null for none); a refusal throws.
   */
  async _json(method, path, body) {
    const headers = body === undefined ? {} : { "Content-Type": "application/json" };
    const response = await this.fetch(path, { method, body, headers });
    const answer = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) {
      const message = answer?.detail ?? `HTTP ${response.status}`;
      throw new ChatGatewayError(message, { code: answer?.error ?? "internal" });
    }
    return answer;
  }

  /** Closes the connection. Unfinished runs reject with a ChatGatewayError (`closed`). */
  close() {
    this._shutdown(new ChatGatewayError("The client was closed.", { code: "closed" }));
  }

  // Connection.

  async _open() {
    clearTimeout(this._timers.retry);
    const session = this._session;
    let token;
    try {
      token = await this._freshToken();
    } catch (error) {
      return this._fail(/** @type {Error} */ (error));
    }
    if (session !== this._session || this._ws) return; // closed, or another attempt won
    const frameAuth = this._options.auth === "frame";
    let ws;
    try {
      const protocols = frameAuth ? [SUBPROTOCOL] : [SUBPROTOCOL, `bearer.${token}`];
      ws = new this._WebSocket(this._wsUrl, protocols);
    } catch {
      // A URL or token the constructor refuses: as hopeless as a socket that never opens.
      return this._lost(null, { opened: false });
    }
    this._ws = ws;
    this._ready = false;
    this._refusal = null;
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
      if (frameAuth && this._ws === ws) ws.send(JSON.stringify({ type: "auth", token }));
    });
    ws.addEventListener("message", (event) => {
      if (this._ws === ws) this._onFrame(ws, event.data);
    });
    // Browsers follow "error" with "close", which says more; but some implementations (Node
    // 20's) never close a socket whose handshake failed, so that error is the end of it.
    ws.addEventListener("error", () => {
      if (!opened) this._lost(ws, { opened });
    });
    ws.addEventListener("close", ({ code, reason }) => {
      this._lost(ws, { code, reason, opened, token });
    });
  }

  /** @param {WebSocket} ws @param {unknown} data */
  _onFrame(ws, data) {
    clearTimeout(this._timers.pong); // any frame proves the socket is alive
    this._timers.pong = null;
    let frame;
    try {
      frame = JSON.parse(String(data));
    } catch {
      return;
    }
    if (frame.type === "ready") return this._onReady(frame);
    if (frame.type === "pong" || frame.type === "token_expiring") return; // renewal is scheduled
    if (frame.type === "authenticated") {
      this._expiresAt = frame.expires_at ? frame.expires_at * 1000 : null;
      this._tokenSince = Date.now();
      return this._scheduleRenewal();
    }
    // About no request: e.g. the rate_limited (with retry_after) that precedes a 4429 close.
    if (frame.type === "error" && frame.id === null) {
      if (frame.code === "rate_limited") this._refusal = frame;
      return;
    }
    const run = this._runs.get(frame.id);
    if (!run || run._socket !== ws) return; // a run the caller left, or not sent here
    if (frame.type === "resumed") {
      // Nothing follows a resume at or past the end of an ended generation (§4.2).
      const ended = frame.last_seq !== null && frame.from_seq >= frame.last_seq;
      if (ended && frame.status !== "interrupted") this._finish(run);
      return;
    }
    this._deliver(run, frame);
  }

  /** @param {{user: string, expires_at: number | null}} frame */
  _onReady(frame) {
    // A socket got through (maybe a probe while on HTTP): new runs use it; runs already on
    // HTTP end there, so none is sent twice.
    this._mode = "ws";
    this._ready = true;
    this._attempt = 0;
    this._unopened = 0;
    this._renewals = 0;
    this.user = frame.user;
    this._retiring?.close(1000);
    this._retiring = null;
    this._expiresAt = frame.expires_at ? frame.expires_at * 1000 : null;
    this._scheduleRenewal();
    this._startHeartbeat();
    this._setState("connected");
    this._connectedHooks?.resolve();
    for (const run of this._runs.values()) if (run._transport === "ws") this._send(run);
  }

  /**
   * The current socket is gone: closed, failed to open, or declared dead.
   * @param {WebSocket | null} ws
   * @param {{opened: boolean, code?: number, reason?: string, token?: string}} how
   *   `opened`: whether its handshake completed; `token`: the token it was opened with.
   */
  async _lost(ws, { opened, code, reason, token }) {
    if (ws !== this._ws || this._state === "closed") return; // a socket we gave up on
    const session = this._session;
    this._ws = null;
    this._ready = false;
    this._stopHeartbeat();
    this._retiring?.close(1000);
    this._retiring = null;
    const probing = this._mode === "http"; // runs go over HTTP; this was a background probe
    if (code === CLOSE_UNAUTHORIZED) {
      // The token was refused: renewing it is the only thing that can help.
      if (!probing) this._setState("reconnecting", { delay: 0 });
      try {
        await this._renew(token ?? null, reason || "The token was refused.");
      } catch (error) {
        return this._fail(/** @type {Error} */ (error));
      }
      if (session === this._session) this._open();
      return;
    }
    this._unopened = opened ? 0 : this._unopened + 1;
    if (code === CLOSE_TOO_MANY_CONNECTIONS) return this._retryLater(this._tooMany(reason));
    if (probing) return this._retryLater();
    if (code === CLOSE_IDLE && !this._hasSocketRuns()) return this._goIdle();
    // A socket that does not open while plain HTTP reaches the gateway is a proxy or firewall
    // refusing WebSockets (a browser cannot see the HTTP status that refused it); if HTTP does
    // not reach it either, the gateway itself is down and the socket is retried as before.
    // Runs, and messages waiting for a transport, go over HTTP at once; the socket is probed
    // again in the background, and new runs use it once one gets through.
    const { transport, fallbackAfter } = this._options;
    if (transport === "auto" && this._unopened >= fallbackAfter && (await this._httpReachable())) {
      if (session !== this._session || this._ws) return;
      this._useHttp();
      return this._retryLater();
    }
    // Closed meanwhile, or a socket opened meanwhile (a browser's "online" event).
    if (session !== this._session || this._ws) return;
    this._retryLater();
  }

  /**
   * Opens the next socket after the backoff, or after the wait `refused` asks for when that
   * is longer: a client told to wait that came back sooner would only be refused again.
   * @param {ChatGatewayError} [refused]
   */
  _retryLater(refused) {
    const backoff = this._backoff(this._attempt++);
    const asked = refused?.retryAfter ? Math.ceil(refused.retryAfter * 1000) : 0;
    const delay = Math.min(MAX_TIMER_MS, Math.max(backoff, asked));
    this._holdUntil = asked > 0 ? Date.now() + delay : 0;
    // On HTTP this is a background probe: the runs are served, nothing to report.
    if (this._mode !== "http") {
      this._setState("reconnecting", refused ? { delay, error: refused } : { delay });
    }
    this._timers.retry = setTimeout(() => this._open(), delay);
  }

  /**
   * Why the gateway closed a socket with 4429: the user has too many open. The error frame
   * before the close says how long until one of them lapses.
   * @param {string | undefined} reason
   */
  _tooMany(reason) {
    const refusal = this._refusal;
    const message = refusal?.message || reason || "Too many connections for this user.";
    const retryAfter = typeof refusal?.retry_after === "number" ? refusal.retry_after : undefined;
    return new ChatGatewayError(message, { code: "rate_limited", retryAfter });
  }

  /** Whether an unfinished run needs the socket (to resume it). */
  _hasSocketRuns() {
    for (const run of this._runs.values()) if (run._transport === "ws") return true;
    return false;
  }

  /**
   * The gateway closed a socket nothing used (WS_IDLE_TIMEOUT). Opening another at once would
   * only be closed again, idle: the next `complete`, `attach` or `connect` opens one.
   */
  _goIdle() {
    clearTimeout(this._timers.renew); // the next connect renews the token if it must
    this._setState("idle");
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    const ws = /** @type {WebSocket} */ (this._ws);
    this._timers.ping = setInterval(() => {
      if (this._timers.pong || ws !== this._ws || ws.readyState !== OPEN) return;
      ws.send('{"type":"ping"}');
      // A socket whose network went away (a sleeping laptop, a NAT that forgot it) can look
      // open for minutes, and closing it waits for a handshake that never comes: stop
      // waiting for it and move on to a new one.
      this._timers.pong = setTimeout(() => {
        this._lost(ws, { opened: true });
        ws.close(4000, "No pong in time.");
      }, this._options.pongTimeout);
    }, this._options.pingInterval);
  }

  _stopHeartbeat() {
    clearInterval(this._timers.ping);
    clearTimeout(this._timers.pong);
    this._timers.pong = null;
  }

  // Tokens.

  /** The token to connect with, renewed first when it is missing or about to expire. */
  async _freshToken() {
    if (this._renewing) await this._renewing;
    const renewAt = this._renewAt();
    if (this._options.getToken && (!this._token || (renewAt !== null && Date.now() >= renewAt))) {
      await this._renew(this._token);
    }
    return /** @type {string} */ (this._token);
  }

  /** When to renew the token: `refreshBeforeExpiry` before it expires, at most half-way. */
  _renewAt() {
    if (this._expiresAt === null) return null;
    const lifetime = this._expiresAt - this._tokenSince;
    return this._expiresAt - Math.min(this._options.refreshBeforeExpiry, lifetime / 2);
  }

  /**
   * Gets a new token from `getToken`. With `rejected`, that token was refused: if it has been
   * replaced meanwhile there is nothing to do; if `getToken` gives it back, renewing is
   * hopeless. Concurrent callers share one call of `getToken`.
   * @param {string | null} rejected @param {string} [reason] why the gateway refused it
   */
  _renew(rejected, reason) {
    if (this._renewing) return this._renewing;
    if (rejected !== this._token) return Promise.resolve();
    const refused = `The gateway refused the token: ${reason ?? "401"}`;
    this._renewing = (async () => {
      const { getToken } = this._options;
      if (!getToken) throw new ChatGatewayError(refused, { code: "unauthorized" });
      if (reason && ++this._renewals > MAX_TOKEN_RENEWALS) {
        const also = `It also refused the last ${MAX_TOKEN_RENEWALS} tokens from getToken().`;
        throw new ChatGatewayError(`${refused} ${also}`, { code: "unauthorized" });
      }
      let token;
      try {
        token = await getToken();
      } catch (cause) {
        const why = cause instanceof Error ? cause.message : String(cause);
        throw new ChatGatewayError(`getToken() failed: ${why}`, { code: "unauthorized", cause });
      }
      if (typeof token !== "string" || token === "") {
        throw new ChatGatewayError("getToken() did not return a token.", { code: "unauthorized" });
      }
      if (reason && token === rejected) {
        throw new ChatGatewayError(`${refused} getToken() returned the same token.`, {
          code: "unauthorized",
        });
      }
      this._token = token;
      this._tokenSince = Date.now();
      this._expiresAt = null;
    })().finally(() => {
      this._renewing = null;
    });
    return this._renewing;
  }

  _scheduleRenewal() {
    clearTimeout(this._timers.renew);
    const renewAt = this._renewAt();
    if (!this._options.getToken || renewAt === null) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(1000, renewAt - Date.now()));
    const session = this._session;
    this._timers.renew = setTimeout(async () => {
      try {
        await this._renew(this._token);
      } catch {
        return; // the socket still works; the next connect will ask again, and fail loudly
      }
      if (session !== this._session) return;
      // The gateway renews a live socket's token in place (protocol §4.5), so running answers
      // are not disturbed; it answers with an `authenticated` frame.
      const ws = this._ws;
      if (this._ready && ws && ws.readyState === OPEN) {
        ws.send(JSON.stringify({ type: "auth", token: this._token }));
      } else {
        this._rotate();
      }
    }, delay);
  }

  /**
   * Moves to a socket authenticated with the new token. Only while no run uses the socket:
   * with ON_DISCONNECT=cancel, closing it would cancel the answers it started. The old socket
   * stays open until the new one is ready, and new runs wait for the new one.
   */
  _rotate() {
    if (!this._ready) return;
    this._stopHeartbeat();
    this._retiring = this._ws;
    this._ws = null;
    this._ready = false;
    this._open();
  }

  // Runs.

  _newId() {
    return `r${++this._counter}-${randomId(4)}`;
  }

  /** @param {Run} run */
  _track(run) {
    if (this._state === "closed" || this._state === "idle") this.connect();
    this._runs.set(run.id, run);
    if (this._mode === "http") {
      run._transport = "http";
      this._httpRun(run);
    } else if (this._ready) {
      this._send(run);
    }
  }

  /** (Re)sends a run on the ready socket: as a resume once its generation is known. */
  _send(/** @type {Run} */ run) {
    const ws = /** @type {WebSocket} */ (this._ws);
    run._socket = ws;
    run._cancelSent = false;
    run._sent = true;
    clearTimeout(run._queueTimer);
    const frame = run.generationId
      ? { type: "resume", generation_id: run.generationId, after: run._lastSeq, id: run.id }
      : { type: "completion", id: run.id, ...run._body };
    ws.send(JSON.stringify(frame));
    this._sendCancel(run);
  }

  /** @param {Run} run @param {GatewayEvent | GatewayNotice} event */
  _deliver(run, event) {
    if (event.type === "notice") return this._notice(run, /** @type {GatewayNotice} */ (event));
    if (typeof event.seq === "number") {
      if (event.seq <= run._lastSeq) return; // replayed by a resume: the caller has it
      run._lastSeq = event.seq;
    }
    if (event.generation_id) run.generationId = event.generation_id;
    if (event.conversation_id) run.conversationId = event.conversation_id;
    // Nobody reads a detached run: the gateway has its completion now, and stores the answer.
    if (run._detached) return this._finish(run);
    run._push(event);
    // Errors end a run even with done: false, which the gateway uses for a refused resume.
    if (event.done || event.type === "error") this._finish(run);
    else this._sendCancel(run); // over HTTP a cancel waits for the generation id
  }

  /**
   * A notice is not an event: it goes to `run.notices` and a `notice` event, never into the
   * run's iterator. A resume on a new socket may bring a code again; the caller gets it once.
   * @param {Run} run @param {GatewayNotice} notice
   */
  _notice(run, notice) {
    if (run.notices.some((seen) => seen.code === notice.code)) return;
    run.notices.push(notice);
    this.dispatchEvent(new CustomEvent("notice", { detail: { run, notice } }));
  }

  /** @param {Run} run */
  _cancel(run) {
    if (run._ended) return;
    if (run._transport === "ws" && !run._socket) return this._finish(run); // never sent
    run._cancelRequested = true;
    this._sendCancel(run);
  }

  /** Sends a requested cancel once it can be; resends it after a resume. @param {Run} run */
  _sendCancel(run) {
    if (!run._cancelRequested || run._cancelSent || run._ended) return;
    if (run._transport === "ws") {
      const ws = this._ws;
      if (!this._ready || !ws || run._socket !== ws) return; // sent after the resume
      // By generation id when known: it also reaches a generation another socket follows.
      const frame = run.generationId
        ? { type: "cancel", generation_id: run.generationId }
        : { type: "cancel", id: run.id };
      ws.send(JSON.stringify(frame));
      run._cancelSent = true;
    } else if (run.generationId) {
      run._cancelSent = true;
      const retry = () => {
        run._cancelSent = false; // sent again with the next event
      };
      const path = `/generations/${encodeURIComponent(run.generationId)}/cancel`;
      this.fetch(path, { method: "POST" }).then((response) => {
        if (response.status >= 500) retry();
      }, retry);
    }
  }

  /** The run has its final event. @param {Run} run */
  _finish(run) {
    this._runs.delete(run.id);
    run._end();
  }

  /**
   * The caller stopped listening. A completion the gateway may not have yet is still sent (and
   * sent again after a lost socket) until its first event: leaving the loop stops following
   * the answer, it does not take the question back (that is `cancel()`).
   * @param {Run} run
   */
  _forget(run) {
    run._queue.length = 0;
    if (run._body && !run.generationId && !run._ended) {
      run._detached = true;
      for (const waiter of run._waiters.splice(0)) waiter.resolve({ value: undefined, done: true });
      return;
    }
    this._finish(run);
  }

  // HTTP.

  async _httpReachable() {
    try {
      const signal = AbortSignal.timeout(5000);
      const response = await this._fetch(`${this._httpUrl}/healthz`, { signal });
      await response.body?.cancel();
      return response.ok;
    } catch {
      return false;
    }
  }

  _useHttp() {
    this._mode = "http";
    this._setState("offline-http");
    this._connectedHooks?.resolve();
    for (const run of this._runs.values()) {
      if (run._transport === "http") continue;
      run._transport = "http";
      this._httpRun(run);
    }
  }

  /**
   * Streams a run over HTTP until its final event: `POST /completion` until the generation id
   * is known, then `GET /generations/{id}/events` from the last seq seen, after any cut.
   * @param {Run} run
   */
  async _httpRun(run) {
    run._sent = true;
    clearTimeout(run._queueTimer);
    let attempt = 0;
    while (!run._ended) {
      run._abort = new AbortController();
      const signal = run._abort.signal;
      try {
        const response = run.generationId
          ? await this.fetch(`/generations/${encodeURIComponent(run.generationId)}/events`, {
              headers: { "Last-Event-ID": String(run._lastSeq) },
              signal,
            })
          : await this.fetch("/completion", {
              method: "POST",
              headers: { "Content-Type": "application/json" },
              body: JSON.stringify({ ...run._body, id: run.id, stream: true }),
              signal,
            });
        if (response.status === 204) return this._finish(run); // ended, and we have it all
        if (response.ok) {
          for await (const event of readEvents(/** @type {ReadableStream} */ (response.body))) {
            attempt = 0;
            event.id = run.id; // as over the socket (a resume here carries the starter's id)
            this._deliver(run, event);
            if (run._ended) return;
          }
          // Cut before the final event (e.g. a draining instance): resume it.
        } else if (response.status === 503) {
          await response.body?.cancel(); // an instance draining: another takes it in a moment
        } else {
          // Refused (400, 404, 413...): that is the run's final event.
          return this._deliver(run, await errorEvent(response, run.id));
        }
      } catch (error) {
        if (run._ended) return;
        if (error instanceof ChatGatewayError) return this._fail(error);
        // A network failure: retried below.
      }
      const delay = this._backoff(attempt++);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delay);
        run._wake = () => {
          clearTimeout(timer);
          resolve(undefined);
        };
      });
    }
  }

  // State.

  /** @param {number} attempt */
  _backoff(attempt) {
    const { reconnectDelay, maxReconnectDelay } = this._options;
    const ceiling = Math.min(maxReconnectDelay, reconnectDelay * 2 ** attempt);
    // Jitter keeps a crowd of clients cut off together from coming back together.
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  /** @param {ConnectionState} state @param {{delay?: number, error?: Error}} [extra] */
  _setState(state, extra = {}) {
    const previous = this._state;
    if (state === previous && extra.delay === undefined) return;
    this._state = state;
    this.dispatchEvent(new CustomEvent("statechange", { detail: { state, previous, ...extra } }));
  }

  /** A failure nothing can fix: the token is refused for good. @param {Error} error */
  _fail(error) {
    this._shutdown(error, error);
  }

  /** @param {Error} runError what unfinished runs reject with @param {Error} [cause] */
  _shutdown(runError, cause) {
    this._session += 1;
    for (const timer of Object.values(this._timers)) {
      clearTimeout(timer);
      clearInterval(timer);
    }
    this._timers = {};
    globalThis.removeEventListener?.("online", this._onOnline);
    const sockets = [this._ws, this._retiring];
    this._ws = this._retiring = null;
    this._ready = false;
    for (const ws of sockets) ws?.close(1000);
    for (const run of this._runs.values()) run._end(runError);
    this._runs.clear();
    this._connectedHooks?.reject(runError);
    this._connectedHooks = null;
    this._mode = this._options.transport === "http" ? "http" : "ws";
    this._setState("closed", cause ? { error: cause } : {});
  }
}

/**
 * The JSON events of a Server-Sent Events body. The `id:` lines repeat each event's seq and
 * `:` lines are keep-alives, so only `data:` matters.
 * @param {ReadableStream} body
 * @returns {AsyncGenerator<GatewayEvent>}
 */
async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  /** @type {string[]} */
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const lines = (buffer + value).split(/\r\n|\r|\n/);
      buffer = /** @type {string} */ (lines.pop());
      for (const line of lines) {
        if (line === "") {
          if (data.length > 0) yield JSON.parse(data.join("\n"));
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * A refused HTTP request as the run's final error event, in the shape of a refused frame.
 * @param {Response} response @param {string} id
 * @returns {Promise<GatewayEvent>}
 */
async function errorEvent(response, id) {
  const { status } = response;
  const body = await response.json().catch(() => ({}));
  const message = body.detail ?? `The gateway answered HTTP ${status}.`;
  const code = body.error ?? (status >= 500 ? "internal" : "bad_request");
  const event = refusal(id, code, message, status >= 500 || status === 429);
  // The body's is exact; the header only has whole seconds.
  const header = Number(response.headers.get("retry-after") ?? Number.NaN);
  const retryAfter = typeof body.retry_after === "number" ? body.retry_after : header;
  if (Number.isFinite(retryAfter)) event.retry_after = retryAfter;
  return event;
}

/**
 * An error event for a request that started no generation, shaped as the gateway's (§6.1).
 * @param {string} id @param {string} code @param {string} message @param {boolean} retryable
 * @returns {GatewayEvent}
 */
function refusal(id, code, message, retryable) {
  return { type: "error", id, code, message, error: message, retryable, done: true };
}

/**
 * The error event of a completion that never left the client (`not_sent`): nothing reached
 * the gateway, so sending it again later starts it, once.
 * @param {string} id @param {string} why
 * @returns {GatewayEvent}
 */
function notSent(id, why) {
  return refusal(id, "not_sent", `The message was not sent. ${why}`, true);
}

/** @param {number} bytes */
function randomId(bytes) {
  const values = globalThis.crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(values, (b) => b.toString(16).padStart(2, "0")).join("");
}
