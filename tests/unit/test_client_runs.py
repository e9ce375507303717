"""The client's runs in flight (`gateway_client.runs`)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_client import Chunk, Done, GatewayError, Run
from gateway_client.runs import Runs, oversized


def new_run(runs: Runs, body: dict[str, Any] | None = None) -> Run:
    run = Run(runs.new_id(), lambda r: None, body=body)
    runs.add(run)
    return run


def test_ids_are_unique_within_a_client() -> None:
    runs = Runs()
    ids = {runs.new_id() for _ in range(1000)}
    assert len(ids) == 1000


def test_a_run_is_forgotten_once_its_final_event_is_delivered() -> None:
    runs = Runs()
    run = new_run(runs)
    chunk = Chunk(id=run.id, generation_id="g", conversation_id="c", seq=1, content="Hi")
    assert not runs.deliver(run, chunk)
    assert runs.get(run.id) is run and runs
    done = Done(id=run.id, generation_id="g", conversation_id="c", seq=2, finish_reason="stop")
    assert runs.deliver(run, done)
    assert runs.get(run.id) is None and not runs


async def test_ending_them_all_raises_the_error_in_every_iterator() -> None:
    runs = Runs()
    first, second = new_run(runs), new_run(runs)
    runs.end_all(GatewayError("The client was closed.", code="closed"))
    assert not runs
    for run in (first, second):
        with pytest.raises(GatewayError, match="closed"):
            await run.collect()


def test_iterating_is_over_a_copy_so_runs_may_end_meanwhile() -> None:
    runs = Runs()
    made = [new_run(runs) for _ in range(3)]
    for run in runs:
        runs.end(run)
    assert not runs and all(run.ended for run in made)


def test_a_completion_larger_than_the_gateway_takes_is_refused_before_sending() -> None:
    runs = Runs()
    run = new_run(runs, body={"message": "x" * 100})
    assert oversized(run, 1000) is None
    refusal = oversized(run, 100)
    assert refusal is not None and refusal.code == "bad_request" and not refusal.retryable
    assert refusal.message.endswith("the gateway takes at most 100.")
