"""The transport-agnostic core: start a completion, follow or cancel a generation from any
instance, and show a conversation. Knows no wire format."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping

from gateway.agents.base import Agent, AgentInput
from gateway.bounds import GenerationBounds
from gateway.config import AgentConfig, Settings
from gateway.core.activity import ActivityService
from gateway.core.generations import Follow, Generation, LocalFollow, RemoteFollow, Result
from gateway.core.log_follow import LogFollower
from gateway.core.notices import Sink
from gateway.core.ports import Conversations, GenerationLogs, Models, Pipeline, UserLimits
from gateway.core.running import GenerationRegistry
from gateway.errors import BadRequest, NotFound, OutputFormatRefused, Unavailable
from gateway.events import Done, Event, Failed, GenerationRef, Message
from gateway.limits import Admission, Refusal, Turn, limits_for, token_reservation
from gateway.llm.base import ChatModel, ModelParams
from gateway.obs import tracing
from gateway.principal import Principal
from gateway.protocol import activity as activity_events
from gateway.protocol.frames import CompletionRequest
from gateway.store.log_hub import LogHub
from gateway.store.messages import ACTIVE_LEAF, StoredMessage, new_message_id, stored_size
from gateway.store.records import GenerationMeta, Persisted, Status

log = logging.getLogger("gateway.core.chat")


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
        models: Models,
        agents: Mapping[str, tuple[Agent, AgentConfig]],
        conversations: Conversations,
        generation_log: GenerationLogs,
        generations: GenerationRegistry,
        limits: UserLimits,
        hub: LogHub,
        activity: ActivityService,
    ) -> None:
        self._settings = settings
        self._limits = limits
        self._models = models
        self._agents = agents
        self._conversations = conversations
        self._log = generation_log
        self.generations = generations
        self._follower = LogFollower(
            generation_log, hub, conversations, generations.metrics, settings, activity
        )
        self.activity = activity
        self._bounds = GenerationBounds.of(settings)

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
        if agent_config.allowed_models and model_name not in agent_config.allowed_models:
            allowed = ", ".join(agent_config.allowed_models)
            raise BadRequest(f"Agent '{agent_name}' works with these models only: {allowed}.")
        return agent, agent_config, model

    async def start(
        self,
        principal: Principal,
        request: CompletionRequest,
        subscriber: Sink,
        *,
        must_stream: bool = False,
    ) -> Follow:
        """Open the turn in Redis and launch its generation with `subscriber` attached before
        the first event. A repeated idempotency key attaches to the generation it started.
        Raises a RequestError before anything is stored or sent upstream.
        `must_stream` refuses a non-streaming model (HTTP streams); a socket takes its
        answer as one chunk."""
        if self.generations.draining.is_set():
            raise Unavailable("This gateway instance is restarting; retry in a moment.")
        agent, agent_config, model = self.resolve(request)
        if must_stream and not model.streaming:
            raise BadRequest(streaming_refused(model.name))
        if request.message is None and not (request.conversation_history or request.regenerate):
            raise BadRequest("A turn without a new message needs the messages to answer.")
        generation_id = new_id("gen")
        conversation_id = request.conversation_id or new_id("conv")
        ref = GenerationRef(generation_id, conversation_id)
        params = self._params(request, agent_config, model.name)
        key = request.idempotency_key
        if key is not None and (earlier := await self._log.idempotent(principal.sub, key)):
            # A retry re-attaches without counting against the user's limits.
            return self.attach(await self.locate(principal, earlier), 0, subscriber)
        # Its span starts here so that the record holds its context; one never launched is
        # never ended, so never exported.
        trace = tracing.active.generation(generation_id, conversation_id, model.name, agent.name)
        # The record is created with the admission, in one round trip, before the idempotency
        # key can point at it: a retry that races this request always finds something to follow.
        meta = GenerationMeta(
            generation_id,
            principal.sub,
            conversation_id,
            request.id,
            model.name,
            agent.name,
            trace=trace.traceparent,
            note=request.note,
        )
        user_message = (
            None
            if request.message is None
            else StoredMessage("user", request.message, now_ms(), id=new_message_id())
        )
        admission = await self._admit(principal, request, meta, params.max_tokens, user_message)
        try:
            if key is not None:
                earlier = await self._log.claim_idempotency(
                    principal.sub, key, generation_id, self._settings.idempotency_ttl
                )
                if earlier != generation_id:
                    await self._log.discard(generation_id)
                    await self._limits.release(admission)
                    return self.attach(await self.locate(principal, earlier), 0, subscriber)
            opened = await self._conversations.open_turn(
                principal.sub,
                conversation_id,
                user_message,
                0 if request.conversation_history is not None else 2 * self._settings.history_turns,
                generation_id,
                request.project_id,
                parent_id=ACTIVE_LEAF if request.parent_id is None else request.parent_id,
                regenerate=request.regenerate,
            )
        except BaseException:
            # Nothing started: a retry with the same key must be free to try again.
            await self._log.discard(generation_id, principal.sub, key)
            await self._limits.release(admission)
            raise
        history = opened.history
        message = request.message
        if request.regenerate is not None and history:
            # The question answered again is the path's last message.
            message, history = history[-1].content, history[:-1]
        # Before the generation runs, so that its start is published before its end.
        await self.activity.publish(
            principal.sub,
            [
                activity_events.generation_started(
                    conversation_id,
                    generation_id,
                    model.name,
                    agent.name,
                    message,
                    opened.message_id if request.message is not None else None,
                ),
                activity_events.conversation_updated(
                    conversation_id, opened.title, opened.updated_at
                ),
            ],
        )
        given = AgentInput(
            message=message or "",
            continuation=message is None,
            history=self._history(request, history),
            model=model,
            params=params,
            sources=request.sources,
            project_id=request.project_id,
        )
        generation = Generation(
            ref,
            model.name,
            agent.name,
            agent.run(given),
            on_end=lambda result: self._end(
                principal.sub, generation, result, admission, opened.stored_bytes
            ),
            writer=self.generations.writer,
            metrics=self.generations.metrics,
            bounds=self._bounds,
            generation_log=self._log,
            trace=trace,
        )
        generation.attach(subscriber)
        self.generations.launch(generation)
        return LocalFollow(generation, subscriber)

    async def _admit(
        self,
        principal: Principal,
        request: CompletionRequest,
        meta: GenerationMeta,
        max_tokens: int | None,
        user_message: StoredMessage | None,
    ) -> Admission:
        """Take the turn's share of the user's limits (its message's bytes among them) and
        create the generation's record, or refuse the turn with rate_limited (and remove the
        record)."""
        limits = limits_for(principal, self._settings)
        prompt = len(request.message or "") + sum(
            len(m.content) for m in request.conversation_history or ()
        )
        turn = Turn(
            meta.generation_id,
            meta.conversation_id,
            token_reservation(prompt, max_tokens),
            0 if user_message is None else stored_size(user_message.to_json()),
        )
        taken = await self._limits.admit(
            principal.sub,
            limits,
            turn,
            self._still_running,
            also=lambda pipe: self._log.queue_create(pipe, meta),
        )
        if isinstance(taken, Refusal):
            await self._log.discard(meta.generation_id)
            self.generations.metrics.rate_limited.labels(taken.limit).inc()
            raise taken.error(limits)
        return taken

    async def _still_running(self, generation_id: str) -> bool:
        """False once a generation has ended, including one whose process died (it is ended
        as interrupted here)."""
        if self.generations.get(generation_id) is not None:
            return True
        meta = await self._log.meta(generation_id)
        if meta is None or meta.status != "running":
            return False
        return not await self._follower.interrupt_if_abandoned(meta)

    async def locate(self, principal: Principal, generation_id: str) -> GenerationMeta:
        """The generation's record with its current status (a running one whose process died
        is ended as interrupted first). NotFound unless it is yours."""
        meta = await self._meta(principal, generation_id)
        local = self.generations.get(generation_id)
        if (
            local is None
            and meta.status == "running"
            and await self._follower.interrupt_if_abandoned(meta)
        ):
            meta = await self._meta(principal, generation_id)
        return meta

    def check_after(self, meta: GenerationMeta, after: int) -> None:
        """A client cannot have seen more than a generation running here has produced, nor,
        wherever it runs, more than MAX_LOG_EVENTS events. (Past a stored generation's last
        seq it can: events a dead process delivered but never stored.)"""
        most = self._settings.max_log_events
        if after > most:
            raise BadRequest(f"'after' is {after}, but no generation goes past seq {most}.")
        local = self.generations.get(meta.generation_id)
        if local is not None and after > local.last_seq:
            raise BadRequest(f"'after' is {after}, but this generation is at seq {local.last_seq}.")

    def attach(self, meta: GenerationMeta, after: int, sink: Sink) -> Follow:
        """Deliver events with seq > after, then live ones, to `sink`, at its pace: from this
        process's memory when the generation runs here, else from the log in Redis."""
        name = f"follow-{meta.generation_id}"
        self.check_after(meta, after)
        self.generations.metrics.resumes.inc()
        local = self.generations.get(meta.generation_id)
        # A span linked to the generation's, wherever that runs (off: the work itself).
        traced = tracing.active.follow
        if local is not None:
            work = traced(meta.generation_id, meta.trace, local.replay(sink, after))
            return LocalFollow(local, sink, asyncio.create_task(work, name=name))
        work = traced(meta.generation_id, meta.trace, self._follower.follow(meta, after, sink))
        return RemoteFollow(asyncio.create_task(work, name=name), meta.generation_id)

    async def cancel(self, principal: Principal, generation_id: str) -> Status:
        """Stop the generation wherever it runs; idempotent. NotFound unless it is yours."""
        meta = await self.locate(principal, generation_id)
        if meta.status != "running":
            return meta.status
        local = self.generations.get(generation_id)
        if local is not None:
            local.cancel()
        else:
            await self._log.request_cancel(generation_id)
        return "running"

    async def forget(self, principal: Principal, generation_id: str) -> None:
        """Delete an ended generation's record and log (its conversation keeps the answer).
        NotFound unless it is yours; BadRequest while it runs."""
        meta = await self.locate(principal, generation_id)
        if meta.status == "running":
            raise BadRequest("A generation still running cannot be deleted; cancel it first.")
        await self._log.delete([generation_id])

    async def stored_events(self, meta: GenerationMeta) -> list[Event]:
        """The events its log holds now, from the first: a running generation's so far (the
        log writer's batch behind what its followers got)."""
        return await self._log.read_after(
            meta.generation_id, 0, count=self._settings.max_log_events
        )

    async def _meta(self, principal: Principal, generation_id: str) -> GenerationMeta:
        meta = await self._log.meta(generation_id)
        if meta is None or meta.owner != principal.sub:
            # Identical for unknown and foreign ids: nobody learns what others run.
            raise NotFound(f"Generation '{generation_id}' was not found.")
        return meta

    def _history(self, request: CompletionRequest, stored: list[Message]) -> list[Message]:
        if request.conversation_history is not None:
            return list(request.conversation_history)
        return stored

    def _params(self, request: CompletionRequest, agent: AgentConfig, model: str) -> ModelParams:
        config = self._settings.models[model]
        output = request.output_format
        if output is not None and output.needs_structured_outputs and not config.structured_outputs:
            raise OutputFormatRefused(model, output.kind)
        cap = config.max_tokens
        wanted = request.max_tokens
        max_tokens = min(x for x in (wanted, cap) if x is not None) if wanted or cap else None
        temperature = request.temperature if request.temperature is not None else agent.temperature
        return ModelParams(
            temperature=temperature,
            max_tokens=max_tokens,
            stop=request.stop,
            tools=request.tools,
            tool_choice=request.tool_choice,
            output_format=request.output_format,
        )

    async def _end(
        self,
        owner: str,
        generation: Generation,
        result: Result,
        admission: Admission,
        opened_bytes: int,
    ) -> Persisted:
        """Store the answer, release the turn's limits and count the conversation's bytes
        (`opened_bytes` as the turn opened, plus the answer), with the final event."""
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
        conversation_id = generation.ref.conversation_id
        finish = result.finish
        ended = activity_events.generation_ended(
            conversation_id,
            generation.id,
            result.status,
            finish.finish_reason if isinstance(finish, Done) else None,
            finish.code if isinstance(finish, Failed) else None,
        )

        webhooks = self.activity.webhooks
        followed = generation.followed  # before the final event: subscribers still attached

        def store_answer_and_release(pipe: Pipeline) -> None:
            size = self._conversations.queue_answer(pipe, owner, conversation_id, answer)
            self._limits.queue_release(pipe, admission, result.usage.total_tokens)
            self._limits.queue_stored(pipe, owner, conversation_id, opened_bytes + size)
            self.activity.queue(pipe, owner, [ended])
            if webhooks is not None:
                fields = ended.fields
                webhooks.queue_end(
                    pipe,
                    owner,
                    (conversation_id, generation.id),
                    result.status,
                    fields["finish_reason"],
                    result.usage,
                    result.text,
                    followed,
                )

        def store_answer(pipe: Pipeline) -> None:  # stores it once, however often it runs
            self._conversations.queue_answer(pipe, owner, conversation_id, answer)

        return await self.generations.writer.finish(
            generation.id, result.finish, result.status, store_answer_and_release, store_answer
        )
