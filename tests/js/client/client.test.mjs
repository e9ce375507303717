// static/chat-gateway.js against a real gateway process, started by tests/e2e/test_client_js.py,
// which passes its address, a token and the signing secret in the environment. The gateway's
// models are those of tests/processes.py: `fake-i<ms>-n<count>` streams " t0 t1 ..." with <ms>
// between tokens, so a run of it is start, <count> chunks and done.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { ChatGatewayError } from "../../../static/chat-gateway.js";
import {
  GATEWAY,
  QUICK,
  SLOW,
  SLOWER,
  TOKEN,
  assertWhole,
  collect,
  mint,
  nextFrame,
  nextState,
  open,
  path,
  range,
  recordStates,
  recordingFetch,
  recordingSocket,
} from "./helpers.mjs";

/** The response with its Server-Sent Events body ended cleanly after `count` events. */
function cutAfter(response, count) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let text = "";
  let sent = 0;
  const body = new ReadableStream({
    async pull(controller) {
      const { value, done } = await reader.read();
      if (done) return controller.close();
      text += decoder.decode(value, { stream: true });
      let end = 0;
      for (let i = 0; i < count && end >= 0; i++) {
        const at = text.indexOf("\n\n", end);
        end = at < 0 ? -1 : at + 2;
      }
      controller.enqueue(encoder.encode(text.slice(sent, end < 0 ? undefined : end)));
      sent = text.length;
      if (end >= 0) {
        controller.close();
        await reader.cancel();
      }
    },
    cancel: () => reader.cancel(),
  });
  return new Response(body, { status: response.status, headers: response.headers });
}

// Over the WebSocket.

test("a completion streams its events, then the conversation goes on", async (t) => {
  const client = open(t);
  const states = recordStates(client);
  const run = client.complete({ message: "hello", model: QUICK });
  assert.equal(run.generationId, null);
  const events = await collect(run);
  assertWhole(events, 20);
  assert.ok(events.every((event) => event.id === run.id));
  assert.match(run.generationId, /^gen_/);
  assert.equal(run.generationId, events[0].generation_id);
  assert.equal(run.conversationId, events[0].conversation_id);
  assert.equal(run.lastSeq, 22);
  assert.equal(client.user, "alice");
  assert.deepEqual(states, ["connecting", "connected"]);

  const { conversationId } = run;
  const next = await collect(client.complete({ message: "more", conversationId }));
  assert.equal(next[0].conversation_id, run.conversationId);
  assert.equal(next.map((event) => event.content).join(""), "You said: more");
});

test("edit, regenerate, switch, fork and delete a branch", async (t) => {
  const client = open(t);
  const conversationId = `js-tree-${randomUUID().slice(0, 8)}`;
  const shown = async (id = conversationId) =>
    (await (await client.fetch(`/conversations/${id}`)).json()).messages;
  for (const message of ["q1", "q2"]) await collect(client.complete({ message, conversationId }));
  const [q1, a1, q2, a2] = await shown();
  await collect(client.complete({ message: "q2b", conversationId, parentId: a1.id }));
  const edited = await shown();
  assert.deepEqual(edited.map((m) => m.content), ["q1", "You said: q1", "q2b", "You said: q2b"]);
  assert.deepEqual(edited[2].branch, { index: 1, count: 2, ids: [q2.id, edited[2].id] });
  await collect(client.complete({ regenerate: edited[3].id, conversationId }));
  assert.equal((await shown())[3].branch.count, 2);
  assert.equal(await client.switchBranch(conversationId, q2.id), a2.id);
  const forked = await client.fork(conversationId, a1.id);
  assert.deepEqual((await shown(forked)).map((m) => m.id), [q1.id, a1.id]);
  await client.deleteMessage(conversationId, q2.id);
  assert.equal((await shown())[2].content, "q2b");
  await assert.rejects(client.deleteMessage(conversationId, q2.id), { code: "not_found" });
});

test("two completions at once, on one socket", async (t) => {
  const Socket = recordingSocket();
  const client = open(t, { WebSocket: Socket });
  const first = client.complete({ message: "one", model: SLOW });
  const second = client.complete({ message: "two", model: QUICK });
  assert.notEqual(first.id, second.id);
  const [a, b] = await Promise.all([collect(first), collect(second)]);
  assertWhole(a, 100);
  assertWhole(b, 20);
  assert.notEqual(first.generationId, second.generationId);
  assert.ok(a.every((event) => event.id === first.id));
  assert.ok(b.every((event) => event.id === second.id));
  assert.equal(Socket.all.length, 1);
  // The token travels in the subprotocol list, never in the URL.
  assert.equal(Socket.all[0].url, `${GATEWAY.replace(/^http/, "ws")}/ws`);
  assert.equal(Socket.all[0].protocol, "chat-gateway.v1");
});

test("the token can go in a first auth frame instead", async (t) => {
  const Socket = recordingSocket();
  const client = open(t, { WebSocket: Socket, auth: "frame" });
  const events = await collect(client.complete({ message: "hi" }));
  assert.equal(events.at(-1).type, "done");
  assert.deepEqual(Socket.all[0].sent[0], { type: "auth", token: TOKEN });
  assert.equal(Socket.all[0].url, `${GATEWAY.replace(/^http/, "ws")}/ws`);
});

test("cancel ends the answer with finish_reason cancelled", async (t) => {
  const client = open(t);
  const run = client.complete({ message: "long", model: SLOWER });
  const events = await collect(run, (event) => {
    if (event.type === "chunk" && event.seq === 3) run.cancel();
  });
  const last = events.at(-1);
  assert.equal(last.type, "done");
  assert.equal(last.finish_reason, "cancelled");
  assert.deepEqual(
    events.map((event) => event.seq),
    range(1, last.seq),
  );
  assert.ok(last.seq < 202);
});

test("cancelling a completion that was never sent ends it with no events", async (t) => {
  const Socket = recordingSocket();
  const client = open(t, { WebSocket: Socket });
  const run = client.complete({ message: "never" }); // the socket is not ready yet
  run.cancel();
  assert.deepEqual(await collect(run), []);
  const after = await collect(client.complete({ message: "later" }));
  assert.equal(after.at(-1).type, "done");
  const sent = Socket.all.flatMap((ws) => ws.sent).filter((frame) => frame.type === "completion");
  assert.deepEqual(
    sent.map((frame) => frame.message),
    ["later"],
  );
});

test("an error event ends its run without an exception", async (t) => {
  const client = open(t);
  const events = await collect(client.complete({ message: "x", model: "no-such-model" }));
  assert.equal(events.length, 1);
  assert.equal(events[0].type, "error");
  assert.equal(events[0].code, "bad_request");
  assert.equal(events[0].done, true);
  assert.match(events[0].message, /Unknown model 'no-such-model'/);
});

test("a completion too large for the gateway ends with an error event, unsent", async (t) => {
  const Socket = recordingSocket();
  const client = open(t, { WebSocket: Socket, maxFrameBytes: 1000 });
  const events = await collect(client.complete({ message: "x".repeat(1000) }));
  assert.equal(events.length, 1);
  assert.equal(events[0].code, "bad_request");
  assert.match(events[0].message, /^The request has \d+ bytes; the gateway takes at most 1000\.$/);
  assert.equal(Socket.all.length, 0);
});

test("a socket cut mid-stream is replaced; the run resumes, no gap, no duplicate", async (t) => {
  const Socket = recordingSocket();
  const client = open(t, { WebSocket: Socket });
  const states = recordStates(client);
  const run = client.complete({ message: "x", model: SLOW });
  const events = await collect(run, (event) => {
    if (event.seq === 5) Socket.all[0].close();
  });
  assertWhole(events, 100);
  assert.equal(Socket.all.length, 2);
  const resume = Socket.all[1].sent.find((frame) => frame.type === "resume");
  assert.equal(resume.generation_id, run.generationId);
  assert.equal(resume.id, run.id);
  assert.ok(resume.after >= 5 && resume.after < 102, `resumed after ${resume.after}`);
  assert.ok(Socket.all[1].received.some((frame) => frame.type === "resumed"));
  assert.deepEqual(states, ["connecting", "connected", "reconnecting", "connected"]);
});

test("events the caller has already seen are dropped when a resume replays them", async (t) => {
  // A resume from 0 instead of the last seq seen: the gateway replays everything again.
  const Socket = recordingSocket({
    rewrite: (frame) => (frame.type === "resume" ? { ...frame, after: 0 } : frame),
  });
  const client = open(t, { WebSocket: Socket });
  const run = client.complete({ message: "x", model: SLOW });
  const events = await collect(run, (event) => {
    if (event.seq === 5) Socket.all[0].close();
  });
  assertWhole(events, 100);
  assert.equal(Socket.all[1].received.filter((frame) => frame.seq === 1).length, 1);
});

test("a socket cut before the answer started gets the same answer, not a second one", async (t) => {
  let cut = false;
  const Socket = recordingSocket({
    afterSend(ws, frame) {
      if (frame.type === "completion" && !cut) {
        cut = true;
        ws.close();
      }
    },
  });
  const client = open(t, { WebSocket: Socket });
  const conversationId = `js-${randomUUID()}`;
  const events = await collect(client.complete({ message: "once", model: QUICK, conversationId }));
  assertWhole(events, 20);
  const completions = Socket.all.map((ws) => ws.sent.find((frame) => frame.type === "completion"));
  const [first, again] = completions;
  assert.equal(again.idempotency_key, first.idempotency_key);
  const view = await (await client.fetch(`/conversations/${conversationId}`)).json();
  assert.deepEqual(
    view.messages.map((message) => message.role),
    ["user", "assistant"],
  );
});

test("a socket that stops answering pings is replaced, and the run resumes", async (t) => {
  const Socket = recordingSocket();
  const client = open(t, { WebSocket: Socket, pingInterval: 100, pongTimeout: 500 });
  const run = client.complete({ message: "x", model: SLOW });
  let dead;
  let sentBefore;
  const events = await collect(run, (event) => {
    if (event.seq === 5) {
      dead = Socket.all.at(-1);
      dead.deaf = true;
      sentBefore = dead.sent.length;
    }
  });
  assertWhole(events, 100);
  const unanswered = dead.sent.slice(sentBefore);
  assert.ok(unanswered.some((frame) => frame.type === "ping"), "the dead socket was pinged");
  const next = Socket.all[Socket.all.indexOf(dead) + 1];
  assert.ok(next.sent.some((frame) => frame.type === "resume"));
});

test("attach follows a running generation from any seq, also over HTTP", async (t) => {
  const starter = open(t);
  const follower = open(t);
  const overHttp = open(t, { transport: "http" });
  const run = starter.complete({ message: "x", model: SLOW });
  let started;
  const first = new Promise((resolve) => {
    started = resolve;
  });
  // The server refuses to resume past the seq a running generation has reached.
  const original = collect(run, (event) => event.seq === 3 && started(event));
  const { generation_id: generationId } = await first;
  const [all, fromStart, fromThree, fromThreeOverHttp] = await Promise.all([
    original,
    collect(follower.attach(generationId)),
    collect(follower.attach(generationId, { after: 3 })),
    collect(overHttp.attach(generationId, { after: 3 })),
  ]);
  assertWhole(all, 100);
  const withoutId = (events) => events.map(({ id, ...rest }) => rest);
  assert.deepEqual(withoutId(fromStart), withoutId(all));
  assert.deepEqual(withoutId(fromThree), withoutId(all.slice(3)));
  assert.deepEqual(withoutId(fromThreeOverHttp), withoutId(all.slice(3)));
  // An ended generation is replayed from its log; at its end there is nothing to deliver.
  assert.deepEqual(withoutId(await collect(follower.attach(generationId))), withoutId(all));
  assert.deepEqual(await collect(follower.attach(generationId, { after: 102 })), []);
  assert.deepEqual(await collect(overHttp.attach(generationId, { after: 102 })), []);
});

test("close() rejects the runs still going", async (t) => {
  const client = open(t);
  const run = client.complete({ message: "x", model: SLOW });
  await assert.rejects(
    collect(run, () => client.close()),
    (error) => error instanceof ChatGatewayError && error.code === "closed",
  );
  assert.equal(client.state, "closed");
});

// Tokens.

test("a refused token is renewed with getToken and the client connects", async (t) => {
  let calls = 0;
  const client = open(t, {
    token: mint(-60),
    getToken: async () => {
      calls += 1;
      return mint(600);
    },
  });
  const events = await collect(client.complete({ message: "hi" }));
  assert.equal(events.at(-1).type, "done");
  assert.equal(calls, 1);
  assert.equal(client.state, "connected");
});

test("getToken giving back the refused token is a clear, final error", async (t) => {
  const expired = mint(-60);
  const client = open(t, { token: expired, getToken: () => expired });
  const closed = nextState(client, "closed");
  const connected = client.connect();
  const run = client.complete({ message: "hi" });
  const refused = (error) =>
    error instanceof ChatGatewayError &&
    error.code === "unauthorized" &&
    error.message.includes("The token has expired.") &&
    error.message.includes("same token");
  await assert.rejects(connected, refused);
  await assert.rejects(collect(run), refused);
  assert.ok(refused((await closed).error));
});

test("a refused token without getToken, or a failing getToken, is a clear error", async (t) => {
  const alone = open(t, { token: mint(-60) });
  await assert.rejects(alone.connect(), {
    name: "ChatGatewayError",
    code: "unauthorized",
    message: "The gateway refused the token: The token has expired.",
  });
  const failing = open(t, {
    token: undefined,
    getToken: async () => {
      throw new Error("the sign-in service is down");
    },
  });
  await assert.rejects(failing.connect(), (error) => {
    assert.equal(error.message, "getToken() failed: the sign-in service is down");
    assert.equal(error.cause.message, "the sign-in service is down");
    return true;
  });
});

test("the token is renewed before expiry on the live socket, without disturbing a run", async (t) => {
  const Socket = recordingSocket();
  let renewals = 0;
  const client = open(t, {
    WebSocket: Socket,
    token: mint(4), // renewed half-way through its life, at about 2 s
    getToken: () => {
      renewals += 1;
      return mint(600);
    },
    refreshBeforeExpiry: 3000,
  });
  const states = recordStates(client);
  await client.connect();
  const renewed = nextFrame(Socket, "authenticated");
  // This answer takes about 4 s, past the first token's expiry: the same socket carries it.
  const events = await collect(client.complete({ message: "x", model: SLOWER }));
  assertWhole(events, 200);
  const { frame } = await renewed;
  assert.ok(frame.expires_at * 1000 > Date.now() + 500_000);
  assert.equal(renewals, 1);
  assert.ok(Socket.all[0].sent.some((sent) => sent.type === "auth"));
  const after = await collect(client.complete({ message: "still the same socket" }));
  assert.equal(after.at(-1).type, "done");
  assert.equal(Socket.all.length, 1);
  assert.deepEqual(states, ["connecting", "connected"]);
});

// Over HTTP.

test("when WebSockets cannot be opened, the client falls back to HTTP streaming", async (t) => {
  const { fetch, requests } = recordingFetch();
  const client = open(t, {
    wsUrl: `${GATEWAY.replace(/^http/, "ws")}/not-a-socket`,
    fallbackAfter: 2,
    fetch,
  });
  const states = recordStates(client);
  const run = client.complete({ message: "x", model: QUICK });
  const events = await collect(run);
  assertWhole(events, 20);
  assert.ok(events.every((event) => event.id === run.id));
  assert.equal(states.at(-1), "offline-http");
  assert.deepEqual(states.slice(0, 2), ["connecting", "reconnecting"]);
  assert.deepEqual(
    requests.map((request) => `${request.method} ${path(request)}`),
    ["GET /healthz", "POST /completion"],
  );
  assert.equal(requests[1].headers.get("authorization"), `Bearer ${TOKEN}`);
});

test("a run moves to HTTP when sockets stop opening mid-way, no gap, no duplicate", async (t) => {
  const Socket = recordingSocket({
    url: (url, index) => (index === 0 ? url : url.replace(/\/ws$/, "/not-a-socket")),
  });
  const { fetch, requests } = recordingFetch();
  const client = open(t, { WebSocket: Socket, fetch, fallbackAfter: 2 });
  const states = recordStates(client);
  let socketsBeforeHttp = 0;
  nextState(client, "offline-http").then(() => (socketsBeforeHttp = Socket.all.length));
  const run = client.complete({ message: "x", model: SLOW });
  const events = await collect(run, (event) => {
    if (event.seq === 5) Socket.all[0].close();
  });
  assertWhole(events, 100);
  assert.deepEqual(states.slice(0, 3), ["connecting", "connected", "reconnecting"]);
  assert.equal(states.at(-1), "offline-http");
  // The one that worked, then two that did not open; later ones are probes in the background.
  assert.equal(socketsBeforeHttp, 3);
  assert.ok(Socket.all.slice(1).every((ws) => ws.sent.length === 0));
  const resume = `/generations/${run.generationId}/events`;
  const resumed = requests.filter((request) => path(request) === resume);
  assert.equal(resumed.length, 1);
  assert.ok(Number(resumed[0].headers.get("last-event-id")) >= 5);
});

test("an HTTP stream cut mid-way resumes with Last-Event-ID, no gap, no duplicate", async (t) => {
  let cuts = 0;
  const { fetch, requests } = recordingFetch((request, response) =>
    path(request) === "/completion" && cuts++ === 0 ? cutAfter(response, 5) : response,
  );
  const client = open(t, { transport: "http", fetch });
  const run = client.complete({ message: "x", model: SLOW });
  const events = await collect(run);
  assertWhole(events, 100);
  assert.deepEqual(
    requests.map((request) => `${request.method} ${path(request)}`),
    ["POST /completion", `GET /generations/${run.generationId}/events`],
  );
  assert.equal(requests[1].headers.get("last-event-id"), "5");
  assert.equal(client.state, "offline-http");
});

test("cancel over HTTP", async (t) => {
  const { fetch, requests } = recordingFetch();
  const client = open(t, { transport: "http", fetch });
  const run = client.complete({ message: "x", model: SLOWER });
  const events = await collect(run, (event) => {
    if (event.seq === 3) run.cancel();
  });
  assert.equal(events.at(-1).finish_reason, "cancelled");
  const cancel = `/generations/${run.generationId}/cancel`;
  assert.ok(requests.some((request) => request.method === "POST" && path(request) === cancel));
});

test("over HTTP a refused token is renewed and the request sent again", async (t) => {
  const { fetch, requests } = recordingFetch();
  const client = open(t, { transport: "http", fetch, token: mint(-60), getToken: () => mint(600) });
  const events = await collect(client.complete({ message: "x", model: QUICK }));
  assertWhole(events, 20);
  assert.deepEqual(
    requests.map((request) => path(request)),
    ["/completion", "/completion"],
  );
});
