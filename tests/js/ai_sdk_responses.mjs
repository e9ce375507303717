// The AI SDK's default OpenAI provider, `openai(model)`, which calls the Responses API,
// against the gateway (tests/http/test_responses.py).
// Usage: node ai_sdk_responses.mjs '{"url": url, "token": jwt, "model": name}'
// Prints one JSON object: what the SDK got.
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, jsonSchema, streamText, tool } from "ai";

const options = JSON.parse(process.argv[2]);
const openai = createOpenAI({ baseURL: `${options.url}/v1`, apiKey: options.token });
const model = openai(options.model);

const whole = await generateText({ model, system: "Be brief.", prompt: "hi there" });
const again = await generateText({
  model,
  messages: [
    { role: "user", content: "hi there" },
    ...whole.response.messages,
    { role: "user", content: "again" },
  ],
});
const streamed = streamText({ model, prompt: "a b" });
let text = "";
for await (const delta of streamed.textStream) text += delta;
const weather = tool({
  description: "The weather in a city.",
  inputSchema: jsonSchema({ type: "object", properties: { city: { type: "string" } } }),
});
const called = await generateText({
  model,
  prompt: JSON.stringify({ city: "Paris" }),
  tools: { weather },
});
// Structured output by text.format json_schema, on echo (which takes JSON formats).
const place = await generateObject({
  model: openai("echo"),
  prompt: "Where?",
  schema: jsonSchema({
    type: "object",
    properties: { city: { type: "string" }, days: { type: "integer" } },
    required: ["city", "days"],
    additionalProperties: false,
  }),
});
console.log(
  JSON.stringify({
    whole: { text: whole.text, finishReason: whole.finishReason, usage: whole.usage },
    again: again.text,
    streamed: { text, finishReason: await streamed.finishReason },
    object: place.object,
    called: called.toolCalls.map((c) => ({ name: c.toolName, input: c.input })),
  }),
);
