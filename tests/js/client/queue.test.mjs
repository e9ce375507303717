// Messages sent while no transport is open: they wait in the client's queue (bounded in number
// and in time) and go over whichever transport opens first, once. Against the real gateway of
// tests/e2e/test_client_js.py: its answer to an upgrade on an unknown path is a real refused
// handshake (HTTP 403), and a port nothing listens on is a gateway that cannot be reached.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { createServer } from "node:net";
import { test } from "node:test";

import {
  GATEWAY,
  QUICK,
  SLOW,
  assertWhole,
  collect,
  mint,
  open,
  path,
  recordStates,
  recordingFetch,
  recordingSocket,
} from "./helpers.mjs";

// A test that waits for ever fails instead.
const LIMIT = { timeout: 20_000 };
const REFUSED = `${GATEWAY.replace(/^http/, "ws")}/not-a-socket`;

/** A port on which nothing listens. */
async function closedPort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Polls `probe` until it returns something, for at most `within` ms. */
async function until(probe, within = 10_000) {
  const deadline = Date.now() + within;
  for (;;) {
    const value = await probe();
    if (value) return value;
    assert.ok(Date.now() < deadline, "gave up waiting");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The user messages the gateway stored in a conversation. */
async function storedQuestions(client, conversationId) {
  const response = await client.fetch(`/conversations/${encodeURIComponent(conversationId)}`);
  assert.equal(response.status, 200);
  const { messages } = await response.json();
  return messages.filter((m) => m.role === "user").map((m) => m.content);
}

test("sent while the upgrade is refused: over HTTP at once, and once", LIMIT, async (t) => {
  const { fetch, requests } = recordingFetch();
  // The default delays: the message must not wait through socket retries.
  const delays = { reconnectDelay: 500, maxReconnectDelay: 30_000 };
  const client = open(t, { wsUrl: REFUSED, fetch, ...delays });
  const states = recordStates(client);
  const began = Date.now();
  let firstAfter = null;
  const events = await collect(client.complete({ message: "x", model: QUICK }), () => {
    firstAfter ??= Date.now() - began;
  });
  assertWhole(events, 20);
  assert.ok(firstAfter < 2000, `the first event came ${firstAfter} ms after sending`);
  // One refused socket, then HTTP at once: no "reconnecting" in between.
  assert.deepEqual(states, ["connecting", "offline-http"]);
  assert.deepEqual(
    requests.map((request) => `${request.method} ${path(request)}`),
    ["GET /healthz", "POST /completion"],
  );
});

test("a message HTTP took is not sent again when the socket opens after", LIMIT, async (t) => {
  // The first socket is refused; the background probe that follows gets through.
  const Socket = recordingSocket({
    url: (url, index) => (index === 0 ? REFUSED : url),
  });
  const { fetch, requests } = recordingFetch();
  const client = open(t, { WebSocket: Socket, fetch, token: mint(600, `q-${randomUUID()}`) });
  const states = recordStates(client);
  const first = client.complete({ message: "first", model: SLOW });
  const events = await collect(first);
  assertWhole(events, 100);
  // The socket was ready while the first answer still streamed over HTTP.
  assert.deepEqual(states, ["connecting", "offline-http", "connected"]);
  const posted = requests.filter((request) => path(request) === "/completion");
  assert.equal(posted.length, 1);
  const overSockets = Socket.all.flatMap((ws) => ws.sent).filter((f) => f.type === "completion");
  assert.deepEqual(overSockets, []);

  // The next message goes over the socket.
  const second = await collect(client.complete({ message: "second", model: QUICK }));
  assertWhole(second, 20);
  const sentOn = Socket.all.at(-1).sent.filter((frame) => frame.type === "completion");
  assert.deepEqual(
    sentOn.map((frame) => frame.message),
    ["second"],
  );
  assert.equal(requests.filter((request) => path(request) === "/completion").length, 1);
  assert.deepEqual(await storedQuestions(client, first.conversationId), ["first"]);
});

test("with no transport, at most maxQueued wait, each for queueTimeout", LIMIT, async (t) => {
  const port = await closedPort();
  const client = open(t, { url: `http://127.0.0.1:${port}`, maxQueued: 2, queueTimeout: 400 });
  const began = Date.now();
  const runs = ["a", "b", "c"].map((message) => client.complete({ message }));
  const ends = runs.map((run) => collect(run).then((events) => [events, Date.now() - began]));
  const [overflow, overflowAfter] = await ends[2];
  const waited = await Promise.all(ends.slice(0, 2));

  for (const events of [overflow, ...waited.map(([events]) => events)]) {
    assert.equal(events.length, 1);
    const [event] = events;
    assert.equal(event.type, "error");
    assert.equal(event.code, "not_sent");
    assert.equal(event.retryable, true);
    assert.equal(event.done, true);
    assert.equal(event.generation_id, undefined);
  }
  // The third did not wait at all; the others waited their time, not longer.
  assert.match(overflow[0].message, /^The message was not sent\. 2 messages are already waiting/);
  assert.ok(overflowAfter < 300, `the third ended after ${overflowAfter} ms`);
  for (const [[event], after] of waited) {
    assert.match(event.message, /could not be reached within 0\.4 s\.$/);
    assert.ok(after >= 400 && after < 5000, `ended after ${after} ms`);
  }
  // The client keeps trying: the next message is queued again, not refused.
  assert.equal(client.state, "reconnecting");
  const later = client.complete({ message: "d" });
  later.cancel();
  assert.deepEqual(await collect(later), []);
});

test("leaving the loop before the message was sent still sends it, once", LIMIT, async (t) => {
  const client = open(t, { wsUrl: REFUSED, token: mint(600, `q-${randomUUID()}`) });
  const message = `left early ${randomUUID()}`;
  const run = client.complete({ message, model: QUICK });
  await run.return(); // what a for-await loop left at once does
  const conversation = await until(async () => {
    const { data } = await (await client.fetch("/conversations?limit=5")).json();
    const found = data.find((item) => item.title === message);
    return found?.generation?.status === "complete" ? found : null;
  });
  assert.deepEqual(await storedQuestions(client, conversation.id), [message]);
});
