// The official OpenAI Node SDK's Responses API against the gateway (tests/http/test_responses.py).
// Usage: node responses_sdk.mjs '{"first": url, "second": url, "token": jwt, "model": name}'
// Prints one JSON object: what the SDK got.
import OpenAI from "openai";

const options = JSON.parse(process.argv[2]);
const sdk = (url) => new OpenAI({ baseURL: `${url}/v1`, apiKey: options.token, maxRetries: 0 });
const first = sdk(options.first);
const second = sdk(options.second);

const whole = await first.responses.create({ model: options.model, input: "hi node" });
const stream = await first.responses.create({
  model: options.model,
  input: "a b c",
  stream: true,
  background: true,
});
const seen = [];
for await (const event of stream) {
  seen.push(event);
  if (seen.length === 5) break;
}
const last = seen[seen.length - 1].sequence_number;
const resumed = await second.responses.retrieve(seen[0].response.id, {
  stream: true,
  starting_after: last,
});
const rest = [];
for await (const event of resumed) rest.push(event);
const events = [...seen, ...rest];
console.log(
  JSON.stringify({
    whole: { id: whole.id, status: whole.status, text: whole.output_text },
    numbers: events.map((e) => e.sequence_number),
    types: events.map((e) => e.type),
    text: events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join(""),
  }),
);
