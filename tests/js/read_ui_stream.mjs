// Reads the gateway's UI message streams with the `ai` package's own client code, the code
// `useChat` runs in a browser, and prints what it made of them as one JSON object.
//
//   node read_ui_stream.mjs chat '{"api": ..., "token": ..., "chatId": ..., "text": ..., "body": {...}}'
//       sends one user message with a Chat over DefaultChatTransport, as useChat does
//   node read_ui_stream.mjs resume '{"api": ..., "token": ..., "chatId": ..., "messages": [...]}'
//       reconnects to the chat's running answer, as useChat({resume: true}) does on load
//   node read_ui_stream.mjs parse < stream.txt
//       parses a UI message stream's bytes into a message with readUIMessageStream
//
// chat and resume print {status, error, messages, chunks, requests, finish, valid};
// parse prints {message, chunks, errors, valid}.

import { readFileSync } from "node:fs";
import {
  AbstractChat,
  DefaultChatTransport,
  readUIMessageStream,
  safeValidateUIMessages,
} from "ai";

/** The same state the React binding keeps, without React. */
class MemoryState {
  constructor(messages = []) {
    this.status = "ready";
    this.error = undefined;
    this.messages = messages;
  }
  pushMessage = (message) => {
    this.messages = this.messages.concat(message);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index, message) => {
    this.messages = [
      ...this.messages.slice(0, index),
      this.snapshot(message),
      ...this.messages.slice(index + 1),
    ];
  };
  snapshot = (value) => structuredClone(value);
}

class Chat extends AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new MemoryState(messages) });
  }
}

/** DefaultChatTransport that also records every chunk it hands to the chat. */
class RecordingTransport extends DefaultChatTransport {
  constructor(options, chunks) {
    super(options);
    this.chunks = chunks;
  }
  processResponseStream(stream) {
    const chunks = this.chunks;
    return super.processResponseStream(stream).pipeThrough(
      new TransformStream({
        transform(chunk, controller) {
          chunks.push(chunk);
          controller.enqueue(chunk);
        },
      }),
    );
  }
}

function chatFor(options, seen) {
  const recordingFetch = async (url, init = {}) => {
    const response = await fetch(url, init);
    seen.requests.push({
      url: String(url),
      method: init.method ?? "GET",
      body: typeof init.body === "string" ? JSON.parse(init.body) : null,
      status: response.status,
      headers: Object.fromEntries(response.headers.entries()),
    });
    return response;
  };
  const transport = new RecordingTransport(
    {
      api: options.api,
      headers: { Authorization: `Bearer ${options.token}` },
      body: options.transportBody,
      fetch: recordingFetch,
    },
    seen.chunks,
  );
  return new Chat({
    id: options.chatId,
    messages: options.messages ?? [],
    transport,
    onFinish: ({ message, isAbort, isDisconnect, isError, finishReason }) => {
      seen.finish = { messageId: message.id, isAbort, isDisconnect, isError, finishReason };
    },
  });
}

async function report(chat, seen) {
  const validation = await safeValidateUIMessages({ messages: chat.messages });
  return {
    status: chat.status,
    error: chat.error ? chat.error.message : null,
    messages: chat.messages,
    chunks: seen.chunks,
    requests: seen.requests,
    finish: seen.finish,
    valid: validation.success,
  };
}

async function runChat(options) {
  const seen = { chunks: [], requests: [], finish: null };
  const chat = chatFor(options, seen);
  await chat.sendMessage({ text: options.text }, { body: options.body });
  return report(chat, seen);
}

async function runResume(options) {
  const seen = { chunks: [], requests: [], finish: null };
  const chat = chatFor(options, seen);
  await chat.resumeStream();
  return report(chat, seen);
}

async function runParse() {
  const bytes = readFileSync(0);
  const body = new Response(bytes).body;
  const chunks = [];
  const errors = [];
  const stream = new RecordingTransport({}, chunks).processResponseStream(body);
  let message = null;
  for await (const snapshot of readUIMessageStream({
    stream,
    onError: (error) => errors.push(error.message),
  })) {
    message = snapshot;
  }
  const validation = message
    ? await safeValidateUIMessages({ messages: [message] })
    : { success: false };
  return { message, chunks, errors, valid: validation.success };
}

const [mode, argument] = process.argv.slice(2);
const options = argument ? JSON.parse(argument) : {};
const modes = { chat: runChat, resume: runResume, parse: runParse };
if (!(mode in modes)) {
  console.error(`usage: node read_ui_stream.mjs chat|resume|parse [options-json]`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(await modes[mode](options)) + "\n");
