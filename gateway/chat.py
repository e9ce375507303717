"""The transport-agnostic core: validate a completion request, open its conversation turn,
pick model and agent, and start a Generation. Knows no wire format."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping

from gateway.agents.base import Agent, AgentInput
from gateway.auth import Principal
from gateway.config import AgentConfig, Settings
from gateway.errors import BadRequest
from gateway.events import GenerationRef, Message
from gateway.generations import Generation, GenerationRegistry, Result, Subscriber
from gateway.llm.base import ChatModel, ModelParams
from gateway.llm.registry import ModelRegistry
from gateway.protocol import CompletionRequest
from gateway.store.conversations import ConversationStore, StoredMessage


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(12)}"


def now_ms() -> int:
    return int(time.time() * 1000)


def streaming_refused(model: str) -> str:
    return (
        f"Model '{model}' does not support streaming. "
        "Please set stream=false or use a streaming-capable model."
    )


class ChatService:
    def __init__(
        self,
        settings: Settings,
        models: ModelRegistry,
        agents: Mapping[str, tuple[Agent, AgentConfig]],
        conversations: ConversationStore,
        generations: GenerationRegistry,
    ) -> None:
        self._settings = settings
        self._models = models
        self._agents = agents
        self._conversations = conversations
        self.generations = generations

    def resolve(self, request: CompletionRequest) -> tuple[Agent, AgentConfig, ChatModel]:
        """The agent and model a request names; BadRequest for unknown names. No I/O."""
        agent_name = request.agent or self._settings.default_agent
        found = self._agents.get(agent_name)
        if found is None:
            raise BadRequest(f"Unknown agent '{agent_name}'. Available: {', '.join(self._agents)}.")
        agent, agent_config = found
        model_name = request.model or agent_config.model or self._settings.default_model
        model = self._models.get(model_name)
        if model is None:
            available = ", ".join(self._models.names())
            raise BadRequest(f"Unknown model '{model_name}'. Available: {available}.")
        return agent, agent_config, model

    async def start(
        self,
        principal: Principal,
        request: CompletionRequest,
        subscriber: Subscriber,
        *,
        must_stream: bool = False,
    ) -> Generation:
        """Open the turn in Redis and launch its generation, with `subscriber` attached before
        the first event. Raises a RequestError before anything is stored or sent upstream.
        `must_stream` refuses a non-streaming model (HTTP streams); a socket takes its
        answer as one chunk."""
        agent, agent_config, model = self.resolve(request)
        if must_stream and not model.streaming:
            raise BadRequest(streaming_refused(model.name))
        conversation_id = request.conversation_id or new_id("conv")
        created = now_ms()
        history = await self._conversations.open_turn(
            principal.sub,
            conversation_id,
            StoredMessage("user", request.message, created),
            0 if request.conversation_history is not None else 2 * self._settings.history_turns,
        )
        ref = GenerationRef(new_id("gen"), conversation_id)
        given = AgentInput(
            message=request.message,
            history=self._history(request, history),
            model=model,
            params=self._params(request, agent_config, model.name),
            sources=request.sources,
        )
        generation = Generation(
            ref,
            model.name,
            agent.name,
            agent.run(given),
            on_end=lambda result: self._store_answer(principal.sub, generation, result),
        )
        generation.subscribe(subscriber)
        self.generations.launch(generation)
        return generation

    def _history(self, request: CompletionRequest, stored: list[StoredMessage]) -> list[Message]:
        if request.conversation_history is not None:
            return list(request.conversation_history)
        return [m.as_model_message() for m in stored]

    def _params(self, request: CompletionRequest, agent: AgentConfig, model: str) -> ModelParams:
        cap = self._settings.models[model].max_tokens
        wanted = request.max_tokens
        max_tokens = min(x for x in (wanted, cap) if x is not None) if wanted or cap else None
        temperature = request.temperature if request.temperature is not None else agent.temperature
        return ModelParams(temperature=temperature, max_tokens=max_tokens)

    async def _store_answer(self, owner: str, generation: Generation, result: Result) -> None:
        answer = StoredMessage(
            role="assistant",
            content=result.text,
            created_at=now_ms(),
            status=result.outcome,
            model=generation.model,
            agent=generation.agent,
            generation_id=generation.id,
            usage=result.usage,
        )
        await self._conversations.append_answer(owner, generation.ref.conversation_id, answer)
