// What the client's Node tests share: the gateways' addresses and secret (from
// tests/e2e/test_client_js.py), tokens, clients closed when a test ends, and sockets that record
// their frames.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";

import { ChatGatewayClient } from "../../../static/chat-gateway.js";

export const GATEWAY = process.env.CHAT_GATEWAY_URL;
export const TOKEN = process.env.CHAT_GATEWAY_TOKEN;
export const SECRET = process.env.CHAT_GATEWAY_SECRET;
if (!GATEWAY || !TOKEN || !SECRET) {
  throw new Error("Run these tests through tests/e2e/test_client_js.py, which starts a gateway.");
}

export const QUICK = "fake-i5-n20"; // 22 events in about 0.1 s
export const SLOW = "fake-i20-n100"; // 102 events in about 2 s
export const SLOWER = "fake-i20-n200"; // 202 events in about 4 s

export const textOf = (count) => Array.from({ length: count }, (_, i) => ` t${i}`).join("");
export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * A signed HS256 token, like `chat-gateway token`; a negative ttl gives an expired one.
 * `more` adds claims, e.g. `{ tier: "tight" }`.
 */
export function mint(ttl, sub = "alice", more = {}) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, iat: now, exp: now + ttl, ...more };
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${unsigned}.${createHmac("sha256", SECRET).update(unsigned).digest("base64url")}`;
}

/** A client with quick retries, closed when the test ends. */
export function open(t, options = {}) {
  const client = new ChatGatewayClient({
    url: GATEWAY,
    token: TOKEN,
    reconnectDelay: 20,
    maxReconnectDelay: 200,
    ...options,
  });
  t.after(() => client.close());
  return client;
}

/** Every state the client goes through. */
export function recordStates(client) {
  const states = [];
  client.addEventListener("statechange", (event) => states.push(event.detail.state));
  return states;
}

/** Resolves with the statechange detail of the next change to `state`. */
export function nextState(client, state) {
  return new Promise((resolve) => {
    client.addEventListener("statechange", function listener(event) {
      if (event.detail.state !== state) return;
      client.removeEventListener("statechange", listener);
      resolve(event.detail);
    });
  });
}

/** All of a run's events; `onEvent` sees each one as it arrives. */
export async function collect(run, onEvent = () => {}) {
  const events = [];
  for await (const event of run) {
    events.push(event);
    await onEvent(event, events);
  }
  return events;
}

/** The events of one whole generation: seqs 1..n, each once, and its text. */
/**
 * A whole answer of `tokens` upstream tokens: contiguous seqs from 1, `start` first, `done`
 * last, the whole text. Tokens that reach the gateway together become one chunk (under load
 * more of them do), so the answer has at most `tokens` chunks, not exactly that many.
 */
export function assertWhole(events, tokens) {
  assert.deepEqual(
    events.map((event) => event.seq),
    range(1, events.length),
  );
  assert.ok(events.length <= tokens + 2, `${events.length} events for ${tokens} tokens`);
  assert.equal(events[0].type, "start");
  assert.equal(events.at(-1).type, "done");
  assert.equal(events.at(-1).finish_reason, "stop");
  assert.equal(events.map((event) => event.content).join(""), textOf(tokens));
}

/** A fetch that records each request, and may replace responses. */
export function recordingFetch(replace = (request, response) => response) {
  const requests = [];
  const recorded = async (url, init = {}) => {
    const request = { url: String(url), method: init.method ?? "GET" };
    requests.push({ ...request, headers: new Headers(init.headers) });
    return replace(request, await fetch(url, init));
  };
  return { fetch: recorded, requests };
}

/** A recorded request's path. */
export const path = (request) => new URL(request.url).pathname;

/**
 * A WebSocket class recording its instances and the frames they send and receive. A socket
 * made `deaf` drops everything in both directions while looking open, like a connection
 * whose network went away (what it tries to send is still recorded). `rewrite` may change
 * frames before they are sent, and `url` send the n-th socket elsewhere.
 */
export function recordingSocket({
  afterSend = () => {},
  rewrite = (frame) => frame,
  url: where = (url) => url,
} = {}) {
  return class RecordingSocket extends WebSocket {
    static all = [];
    static onFrame = () => {};

    constructor(url, protocols) {
      super(where(url, RecordingSocket.all.length), protocols);
      this.sent = [];
      this.received = [];
      this.deaf = false;
      RecordingSocket.all.push(this);
      super.addEventListener("message", (event) => {
        if (this.deaf) return;
        const frame = JSON.parse(event.data);
        this.received.push(frame);
        RecordingSocket.onFrame(this, frame);
      });
    }

    send(data) {
      const frame = rewrite(JSON.parse(data));
      this.sent.push(frame);
      if (this.deaf) return;
      super.send(JSON.stringify(frame));
      afterSend(this, frame);
    }

    addEventListener(type, listener, options) {
      if (type !== "message") return super.addEventListener(type, listener, options);
      return super.addEventListener("message", (event) => this.deaf || listener(event), options);
    }
  };
}

/** Resolves with the next frame of `type` any socket of `Socket` receives. */
export function nextFrame(Socket, type) {
  return new Promise((resolve) => {
    Socket.onFrame = (ws, frame) => {
      if (frame.type !== type) return;
      Socket.onFrame = () => {};
      resolve({ ws, frame });
    };
  });
}
