// static/chat-gateway.js against the strict gateway of tests/e2e/test_client_js.py: it has a Redis
// of its own (whose pid the tests get, to stop it mid-answer), closes sockets idle for
// CHAT_GATEWAY_STRICT_IDLE_SECONDS, and gives tokens of the `tight` tier one connection and
// one request a minute. Each test is a different user, so their limits do not meet.

import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { test as nodeTest } from "node:test";

import { ChatGatewayError } from "../../../static/chat-gateway.js";
import {
  QUICK,
  assertWhole,
  collect,
  mint,
  nextState,
  open,
  recordStates,
  recordingSocket,
} from "./helpers.mjs";

const STRICT = process.env.CHAT_GATEWAY_STRICT_URL;
const REDIS_PID = Number(process.env.CHAT_GATEWAY_STRICT_REDIS_PID);
const IDLE_SECONDS = Number(process.env.CHAT_GATEWAY_STRICT_IDLE_SECONDS);
if (!STRICT || !REDIS_PID || !IDLE_SECONDS) {
  throw new Error("Run these tests through tests/e2e/test_client_js.py, which starts the gateways.");
}

const LONG = "fake-i20-n300"; // 302 events in about 6 s: Redis is stopped well before the end
// Far longer than any reconnect delay of these clients (at most 200 ms): a client that was
// going to open another socket has done so by then.
const QUIET_MS = 800;
const TEST_TIMEOUT_MS = 30_000;

/** A test that fails, rather than hangs, when the client never gets where it waits. */
const test = (name, fn) => nodeTest(name, { timeout: TEST_TIMEOUT_MS }, fn);

/** A client of the strict gateway for `sub`, in the `tight` tier when `tight`. */
function strict(t, sub, { tight = false, ...options } = {}) {
  const token = mint(600, `${sub}-${process.pid}`, tight ? { tier: "tight" } : {});
  return open(t, { url: STRICT, token, ...options });
}

/**
 * Stops the strict gateway's Redis once the run reaches seq 5, and continues it when the
 * first notice arrives (or when the test ends). Resolves with the run's events and the
 * details of the client's `notice` events.
 */
async function answerWithRedisStopped(t, client, run) {
  const notices = [];
  const resume = () => process.kill(REDIS_PID, "SIGCONT");
  t.after(resume);
  client.addEventListener("notice", ({ detail }) => {
    notices.push(detail);
    resume();
  });
  const events = await collect(run, (event) => {
    if (event.seq === 5) process.kill(REDIS_PID, "SIGSTOP");
  });
  return { events, notices };
}

function assertOneDegradedNotice(run, events, notices) {
  assertWhole(events, 300);
  assert.ok(events.every((event) => event.type !== "notice"), "a notice among the events");
  assert.equal(notices.length, 1);
  const [{ run: noticed, notice }] = notices;
  assert.equal(noticed, run);
  assert.equal(notice.type, "notice");
  assert.equal(notice.code, "persistence_degraded");
  assert.equal(notice.id, run.id);
  assert.equal(notice.generation_id, run.generationId);
  assert.equal(notice.conversation_id, run.conversationId);
  assert.ok(notice.message.length > 0);
  assert.deepEqual(run.notices, [notice]);
}

// Notices.

test("a notice goes to the notice event and run.notices, not among the events", async (t) => {
  const client = strict(t, "noticed");
  const run = client.complete({ message: "x", model: LONG });
  const { events, notices } = await answerWithRedisStopped(t, client, run);
  assertOneDegradedNotice(run, events, notices);
});

test("over HTTP, the SSE notice event is a notice too", async (t) => {
  const client = strict(t, "noticed-http", { transport: "http" });
  const run = client.complete({ message: "x", model: LONG });
  const { events, notices } = await answerWithRedisStopped(t, client, run);
  assertOneDegradedNotice(run, events, notices);
});

// Limits.

test("a refusal's retry_after reaches the caller, over the socket and over HTTP", async (t) => {
  for (const transport of ["websocket", "http"]) {
    const client = strict(t, `hasty-${transport}`, { tight: true, transport });
    // Sent together: the gateway admits the first and refuses the second (one a minute).
    const [first, second] = await Promise.all([
      collect(client.complete({ message: "one", model: QUICK })),
      collect(client.complete({ message: "two", model: QUICK })),
    ]);
    const [admitted, refused] = first.at(-1).type === "done" ? [first, second] : [second, first];
    assertWhole(admitted, 20);
    assert.equal(refused.length, 1, transport);
    const [error] = refused;
    assert.equal(error.type, "error");
    assert.equal(error.code, "rate_limited");
    assert.equal(error.retryable, true, transport);
    const wait = error.retry_after;
    assert.ok(wait > 0 && wait <= 60, `${transport}: retry_after ${wait}`);
  }
});

test("a socket refused with 4429 waits the error frame's retry_after to reconnect", async (t) => {
  const holder = strict(t, "crowded", { tight: true, pingInterval: 200 }); // never idle
  await holder.connect();
  const Socket = recordingSocket();
  const client = strict(t, "crowded", { tight: true, WebSocket: Socket });
  const states = recordStates(client);
  const waiting = nextState(client, "reconnecting");
  client.connect();
  const { delay, error } = await waiting;

  const [refusal] = Socket.all[0].received;
  assert.equal(refusal.type, "error");
  assert.equal(refusal.code, "rate_limited");
  assert.equal(refusal.id, null);
  assert.ok(refusal.retry_after > 0);
  assert.ok(error instanceof ChatGatewayError);
  assert.equal(error.code, "rate_limited");
  assert.equal(error.retryAfter, refusal.retry_after);
  assert.equal(error.message, refusal.message);
  assert.ok(delay >= refusal.retry_after * 1000, `reconnects after ${delay} ms`);

  // Neither the short reconnect delay nor a new run opens another socket meanwhile.
  const run = client.complete({ message: "later" });
  await sleep(QUIET_MS);
  assert.equal(Socket.all.length, 1);
  assert.equal(client.state, "reconnecting");
  assert.equal(run.generationId, null);
  assert.deepEqual(states, ["connecting", "reconnecting"]);
  assert.equal(holder.state, "connected");
});

// Idle sockets.

test("a socket closed as idle is reopened by the next run, not at once", async (t) => {
  const Socket = recordingSocket();
  const client = strict(t, "idler", { WebSocket: Socket, pingInterval: 600_000 });
  const states = recordStates(client);
  await client.connect();
  const began = Date.now();
  await nextState(client, "idle");
  const after = Date.now() - began;
  assert.ok(after >= IDLE_SECONDS * 800, `closed as idle after ${after} ms`);
  const [closed] = Socket.all;
  assert.equal(closed.readyState, WebSocket.CLOSED);
  await sleep(QUIET_MS);
  assert.equal(Socket.all.length, 1);
  assert.equal(client.state, "idle");

  const events = await collect(client.complete({ message: "back", model: QUICK }));
  assertWhole(events, 20);
  assert.equal(Socket.all.length, 2);
  assert.deepEqual(states, ["connecting", "connected", "idle", "connecting", "connected"]);
});
