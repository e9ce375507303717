// JSON over the gateway's HTTP API (docs/api/conversations.md), through the client's fetch,
// which adds the token and renews it when the gateway refuses it.

/** A refused request: `status` is the HTTP status, the message the gateway's `detail`. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/**
 * @param {import("./chat-gateway.js").ChatGatewayClient} client
 * @param {string} path
 * @param {{method?: string, body?: unknown}} [options]
 * @returns {Promise<any>} the JSON answer, or null for 204
 */
export async function api(client, path, { method = "GET", body } = {}) {
  const init = { method };
  if (body !== undefined) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  const response = await client.fetch(path, init);
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data?.detail ?? `The gateway answered HTTP ${response.status}.`;
    throw new ApiError(response.status, message);
  }
  return data;
}
