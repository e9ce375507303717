"""The client's per-socket protocol state (`gateway_client.session`), fed frames directly:
no socket, no gateway, no clock."""

from __future__ import annotations

import json
from typing import Any

from gateway_client import Chunk, Done, ErrorEvent, Notice, Run, Start
from gateway_client.runs import Runs
from gateway_client.session import (
    PING,
    Activity,
    Authenticated,
    Ready,
    SocketSession,
    TokenExpiring,
)

GEN = "gen_Vb3kP0xQy7LmA2cD"


def new_run(runs: Runs, **kwargs: Any) -> Run:
    """A run as the client makes one: asking to cancel only marks it, as the client does for
    a run already sent on a socket."""
    run = Run(runs.new_id(), lambda r: setattr(r, "cancel_requested", True), **kwargs)
    runs.add(run)
    return run


def frame(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


def event(run: Run, kind: str, seq: int, **fields: Any) -> str:
    return frame(kind, id=run.id, generation_id=GEN, conversation_id="c1", seq=seq, **fields)


def sent(session: SocketSession, run: Run) -> list[dict[str, Any]]:
    return [json.loads(text) for text in session.frames_for(run)]


def test_ready_says_who_and_what_runs_elsewhere() -> None:
    session = SocketSession(Runs(), "tok")
    elsewhere = {"generation_id": GEN, "conversation_id": "c1"}
    running: list[object] = [elsewhere, "not an object"]
    ready = session.receive(
        frame("ready", user="ada", connection_id="conn_1", running=running, expires_at=1e9), 1.0
    )
    assert ready == Ready("ada", "conn_1", [elsewhere], 1e9)
    assert session.ready
    lost = session.lost(1012, "restarting")
    assert (lost.opened, lost.ready, lost.code, lost.reason, lost.token) == (
        True,
        True,
        1012,
        "restarting",
        "tok",
    )


def test_a_socket_closed_before_ready_was_not_accepted() -> None:
    lost = SocketSession(Runs(), "tok").lost(4401, None)
    assert not lost.ready and lost.reason == "" and lost.code == 4401


def test_token_and_activity_frames_are_for_the_client() -> None:
    session = SocketSession(Runs(), "tok")
    assert session.receive(frame("authenticated", expires_at=2e9), 1.0) == Authenticated(2e9)
    assert session.receive(frame("authenticated"), 1.0) == Authenticated(None)
    assert session.receive(frame("token_expiring"), 1.0) == TokenExpiring()
    activity = {"type": "activity", "event": "generation_started", "generation_id": GEN}
    assert session.receive(json.dumps(activity), 1.0) == Activity(activity)
    assert session.receive(frame("pong"), 1.0) is None


def test_a_new_run_sends_its_completion_once() -> None:
    runs = Runs()
    run = new_run(runs, body={"message": "Hi", "idempotency_key": "k1"})
    session = SocketSession(runs, "tok")
    assert sent(session, run) == [
        {"type": "completion", "id": run.id, "message": "Hi", "idempotency_key": "k1"}
    ]
    assert run.socket is session
    assert session.frames_for(run) == []


def test_a_cancel_goes_by_request_id_until_the_generation_is_known() -> None:
    runs = Runs()
    run = new_run(runs, body={"message": "Hi"})
    session = SocketSession(runs, "tok")
    session.frames_for(run)
    run.cancel()
    assert sent(session, run) == [{"type": "cancel", "id": run.id}]
    assert session.frames_for(run) == []  # asked once, sent once


def test_a_cancel_goes_by_generation_id_once_known() -> None:
    runs = Runs()
    run = new_run(runs, body={"message": "Hi"})
    session = SocketSession(runs, "tok")
    session.frames_for(run)
    session.receive(event(run, "start", 1, model="echo"), 1.0)
    run.cancel()
    assert sent(session, run) == [{"type": "cancel", "generation_id": GEN}]


def test_a_run_moved_to_a_new_socket_resumes_from_its_last_seq_then_cancels() -> None:
    runs = Runs()
    run = new_run(runs, body={"message": "Hi"})
    first = SocketSession(runs, "tok")
    first.frames_for(run)
    first.receive(event(run, "start", 1), 1.0)
    first.receive(event(run, "chunk", 2, content="Hel"), 1.0)
    run.cancel()
    first.frames_for(run)  # sent, yet the socket may have dropped it
    second = SocketSession(runs, "tok")
    assert sent(second, run) == [
        {"type": "resume", "generation_id": GEN, "after": 2, "id": run.id},
        {"type": "cancel", "generation_id": GEN},
    ]


def test_an_ended_run_sends_nothing() -> None:
    runs = Runs()
    run = new_run(runs, body={"message": "Hi"})
    run.end()
    assert SocketSession(runs, "tok").frames_for(run) == []


async def test_events_reach_their_run_once_in_order_until_the_final_one() -> None:
    runs = Runs()
    run = new_run(runs, body={"message": "Hi"})
    session = SocketSession(runs, "tok")
    session.frames_for(run)
    frames = [
        event(run, "start", 1, model="echo", agent="chat"),
        event(run, "chunk", 2, content="Hel"),
        event(run, "chunk", 2, content="Hel"),  # replayed by a resume: dropped
        frame("notice", id=run.id, code="slow", message="The model is slow."),
        event(run, "chunk", 3, content="lo"),
        event(run, "done", 4, finish_reason="stop", done=True),
    ]
    for text in frames:
        assert session.receive(text, 1.0) is None
    items = await run.collect()
    assert [type(item) for item in items] == [Start, Chunk, Notice, Chunk, Done]
    assert [item.seq for item in items if not isinstance(item, Notice)] == [1, 2, 3, 4]
    assert run.text == "Hello" and run.conversation_id == "c1" and run.last_seq == 4
    assert runs.get(run.id) is None  # ended, so no later socket resumes it


def test_frames_sent_before_a_run_moved_here_are_dropped() -> None:
    runs = Runs()
    run = new_run(runs, body={"message": "Hi"})
    old, new = SocketSession(runs, "tok"), SocketSession(runs, "tok")
    old.frames_for(run)
    old.receive(event(run, "start", 1), 1.0)
    new.receive(event(run, "chunk", 2, content="x"), 1.0)  # not resumed here yet
    assert run.last_seq == 1
    new.frames_for(run)
    new.receive(event(run, "chunk", 2, content="x"), 1.0)
    assert run.last_seq == 2 and run.text == "x"


def test_frames_of_unknown_runs_are_ignored() -> None:
    runs = Runs()
    session = SocketSession(runs, "tok")
    assert session.receive(frame("chunk", id="nobody", seq=1, content="x"), 1.0) is None
    assert not runs


async def test_a_resume_past_the_end_of_an_ended_generation_ends_the_run() -> None:
    runs = Runs()
    run = new_run(runs, generation_id=GEN, after=4)
    session = SocketSession(runs, "tok")
    assert sent(session, run) == [
        {"type": "resume", "generation_id": GEN, "after": 4, "id": run.id}
    ]
    resumed = {"id": run.id, "generation_id": GEN, "from_seq": 4, "last_seq": 4}
    session.receive(frame("resumed", **resumed, status="complete"), 1.0)
    assert run.ended and runs.get(run.id) is None
    assert await run.collect() == []


def test_an_interrupted_generation_still_gets_its_final_event() -> None:
    runs = Runs()
    run = new_run(runs, generation_id=GEN, after=4)
    session = SocketSession(runs, "tok")
    session.frames_for(run)
    resumed = {"id": run.id, "generation_id": GEN, "from_seq": 4, "last_seq": 4}
    session.receive(frame("resumed", **resumed, status="interrupted"), 1.0)
    session.receive(frame("resumed", **{**resumed, "last_seq": None}, status="running"), 1.0)
    assert not run.ended and runs.get(run.id) is run


def test_a_refused_request_ends_its_run() -> None:
    runs = Runs()
    run = new_run(runs, body={"message": "Hi"})
    session = SocketSession(runs, "tok")
    session.frames_for(run)
    refused = frame("error", id=run.id, code="rate_limited", message="Too many.", retry_after=3)
    session.receive(refused, 1.0)
    assert run.ended and runs.get(run.id) is None
    assert session.lost(1000, "").refusal is None  # about the run, not the connection


def test_a_connection_level_error_explains_the_close() -> None:
    session = SocketSession(Runs(), "tok")
    session.receive(frame("error", code="rate_limited", message="Too many.", retry_after=7), 1.0)
    refusal = session.lost(4429, "too many connections").refusal
    assert isinstance(refusal, ErrorEvent)
    assert (refusal.code, refusal.message, refusal.retry_after) == ("rate_limited", "Too many.", 7)


def test_frames_that_are_not_json_objects_are_ignored() -> None:
    session = SocketSession(Runs(), "tok")
    for text in ("not json", "[1, 2]", '"ready"', b'{"type": "pong"}'):
        assert session.receive(text, 5.0) is None
    assert not session.ready and session.last_frame == 5.0


def test_silence_after_a_heartbeat_means_the_socket_is_dead() -> None:
    session = SocketSession(Runs(), "tok")
    assert session.silent_since(0.0)  # nothing ever came
    session.receive(frame("pong"), 10.0)
    assert not session.silent_since(10.0)
    assert session.silent_since(10.5)
    assert json.loads(PING) == {"type": "ping"}
