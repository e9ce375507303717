// The agent and model pickers, filled from GET /agents and GET /models. A request names an
// agent or a model only when the person chose something other than the default, so the
// gateway's own defaults apply otherwise.

import { api } from "./api.js";
import { h } from "./dom.js";

export class Pickers {
  /**
   * @param {{box: HTMLElement, agent: HTMLSelectElement, model: HTMLSelectElement}} ui
   * @param {import("./chat-gateway.js").ChatGatewayClient} client
   */
  constructor(ui, client) {
    this.ui = ui;
    this.client = client;
    /** @type {Map<string, {id: string, model: string | null, models: string[]}>} */
    this.agents = new Map();
    this.defaultAgent = null;
    this.defaultModel = null;
    ui.agent.addEventListener("change", () => this._fillModels());
  }

  async load() {
    const [agents, models] = await Promise.all([
      api(this.client, "/agents"),
      api(this.client, "/models"),
    ]);
    this.defaultModel = models.default;
    this.defaultAgent = agents.default;
    this.agents = new Map(agents.data.map((agent) => [agent.id, agent]));
    // An agent without a list of its own may use every model.
    for (const agent of this.agents.values()) agent.models ??= models.data.map((m) => m.id);
    const current = this.ui.agent.value;
    this.ui.agent.replaceChildren(
      ...agents.data.map((agent) => h("option", { value: agent.id, text: agent.id })),
    );
    this.ui.agent.value = this.agents.has(current) ? current : agents.default;
    this._fillModels();
    this.ui.box.hidden = false;
  }

  /** The fields to add to a completion: only the choices that differ from the defaults. */
  choice() {
    const agent = this.agents.get(this.ui.agent.value);
    if (!agent) return {};
    const request = {};
    if (agent.id !== this.defaultAgent) request.agent = agent.id;
    if (this.ui.model.value && this.ui.model.value !== agent.model) {
      request.model = this.ui.model.value;
    }
    return request;
  }

  /** Who is expected to answer, until the answer's start event says. */
  expectedLabel() {
    const agent = this.agents.get(this.ui.agent.value);
    return this.labelFor({ model: this.ui.model.value || agent?.model, agent: agent?.id });
  }

  /** "gpt-4o-mini", or "gpt-4o-mini · tools" for an agent other than the default. */
  labelFor({ model, agent }) {
    const who = model || "Assistant";
    return agent && this.defaultAgent && agent !== this.defaultAgent ? `${who} · ${agent}` : who;
  }

  /** Picks what a conversation last used, so that it goes on as it was (when still offered). */
  adopt({ agent, model }) {
    if (!this.agents.has(agent)) return;
    this.ui.agent.value = agent;
    this._fillModels();
    if ([...this.ui.model.options].some((o) => o.value === model)) this.ui.model.value = model;
  }

  _fillModels() {
    const agent = this.agents.get(this.ui.agent.value);
    const models = agent?.models ?? [];
    this.ui.model.replaceChildren(
      ...models.map((id) =>
        h("option", { value: id, text: id === agent?.model ? `${id} (default)` : id }),
      ),
    );
    // With no default model of its own, the agent needs one named: the first it allows.
    this.ui.model.value = agent?.model ?? models[0] ?? "";
    this.ui.model.disabled = models.length < 2;
  }
}
