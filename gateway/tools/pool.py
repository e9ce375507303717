"""The gateway's side of the tool workers: a few processes that run plain-function tools, so
that a tool's time limit ends its work and its memory is bounded.

A thread cannot be stopped, and one that computes holds the interpreter lock, stalling every
stream of the process; a process can be killed. Each worker (`gateway/tools/worker.py`) runs
one call at a time, with its address space limited to `memory_mb`. A call that outlives its
time limit, or whose caller goes away, gets its worker killed with SIGKILL (its process
group, so whatever it started goes too); a worker that dies or runs out of memory fails only
the call it was running. Either way the next call starts a fresh one.

Workers start when a call finds none idle, not with the gateway: a process that never runs a
tool (most serve only chat) holds no extra processes, and a start (about 60 ms and 15 MB) is
paid once per worker, not per call. They are killed, and waited for, when the pool is
closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from typing import Any

from gateway.tools.base import MAX_RESULT_CHARS, ToolError

log = logging.getLogger("gateway.tools")

# Calls waiting for a worker, per worker; more are refused at once. A quick call takes about
# 0.2 ms, so a queue this long drains in a fraction of a second; one that fills up means the
# workers are held by slow calls, which the waiting calls would mostly wait out.
MAX_WAITING_PER_WORKER = 256
# An answer line: MAX_RESULT_CHARS characters of JSON-escaped text (\ud83d\ude00 is 12 bytes).
MAX_ANSWER_BYTES = 12 * MAX_RESULT_CHARS + 64 * 1024
EXIT_WAIT_SECONDS = 5.0
STOPPED = "The tool stopped unexpectedly and did not finish."
CLOSED = "The gateway is shutting down; the tool did not run."


class ToolFailure(Exception):
    """The tool raised something other than ToolError; the message is its traceback, for the
    log (the model reads only that the tool failed)."""


class WorkerPool:
    def __init__(self, size: int, memory_mb: int) -> None:
        self._size = size
        self._memory_mb = memory_mb
        self._free = asyncio.Semaphore(size)
        self._waiting = 0
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()  # started and not killed
        self._exits: set[asyncio.Task[int]] = set()  # killed, not yet exited
        self._closed = False

    async def call(self, target: str, arguments: dict[str, Any], time_limit: float) -> str:
        """Run the function `target` (`module:qualname`) with `arguments` in a worker and
        return its text.

        The wait for a free worker counts against `time_limit`. Raises TimeoutError once the
        limit has passed (the worker was killed), ToolError with a message for the model
        (the tool's own ToolError, or why it could not finish), or ToolFailure."""
        deadline = asyncio.get_running_loop().time() + time_limit
        await self._acquire(deadline, time_limit)
        try:
            async with asyncio.timeout_at(deadline):
                return await self._run(target, arguments, deadline)
        finally:
            self._free.release()

    async def aclose(self) -> None:
        """Kill every worker and wait for each to exit: none outlives the gateway."""
        self._closed = True
        for worker in list(self._workers):
            self._kill(worker)
        if self._exits:
            await asyncio.wait(self._exits, timeout=EXIT_WAIT_SECONDS)

    async def _acquire(self, deadline: float, time_limit: float) -> None:
        if self._closed:
            raise ToolError(CLOSED)
        if self._free.locked() and self._waiting >= MAX_WAITING_PER_WORKER * self._size:
            raise ToolError("Too many tool calls are waiting for a worker; try again shortly.")
        self._waiting += 1
        try:
            async with asyncio.timeout_at(deadline):
                await self._free.acquire()
        except TimeoutError:
            raise ToolError(
                f"No tool worker was free within {time_limit:g} s (all {self._size} were "
                "busy); the tool did not run."
            ) from None
        finally:
            self._waiting -= 1

    async def _run(self, target: str, arguments: dict[str, Any], deadline: float) -> str:
        if self._closed:
            raise ToolError(CLOSED)
        worker = await self._take()
        seconds = math.ceil(deadline - asyncio.get_running_loop().time())
        try:
            answer = await worker.ask(
                {"target": target, "arguments": arguments, "seconds": seconds}
            )
        except BaseException:
            # Timed out, cancelled, or the worker broke: its answer, if one ever comes, must
            # not reach the next call.
            self._kill(worker)
            raise
        if "memory" in answer:
            self._kill(worker)  # it exits by itself; this only makes sure
        elif not self._closed:
            self._idle.append(worker)
        return self._text(answer)

    async def _take(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.process.returncode is None:
                return worker
            self._kill(worker)  # it died while idle (killed from outside): not this call's fault
        return await self._start()

    def _text(self, answer: dict[str, Any]) -> str:
        if "result" in answer:
            return str(answer["result"])
        if "error" in answer:
            raise ToolError(str(answer["error"]))
        if "memory" in answer:
            raise ToolError(
                f"The tool needed more than the {self._memory_mb} MiB of memory it may use "
                "and was stopped."
            )
        raise ToolFailure(str(answer.get("failure", "")))

    async def _start(self) -> _Worker:
        # A start cancelled half-way is killed by asyncio itself.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.tools.worker",
            str(self._memory_mb),
            json.dumps(sys.path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=MAX_ANSWER_BYTES,
            start_new_session=True,  # its own process group, killed as one
        )
        worker = _Worker(process)
        self._workers.add(worker)
        return worker

    def _kill(self, worker: _Worker) -> None:
        if worker not in self._workers:
            return
        self._workers.discard(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        worker.kill()
        exit_ = asyncio.create_task(worker.process.wait(), name=f"tool-worker-exit:{worker.pid}")
        self._exits.add(exit_)
        exit_.add_done_callback(self._exits.discard)


class _Worker:
    """One worker process and its pipes; one request at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(json.dumps(request).encode() + b"\n")
            await stdin.drain()
            line = await stdout.readline()
        except (BrokenPipeError, ConnectionResetError):
            line = b""
        except ValueError:  # a line over the reader's limit
            raise ToolError(
                f"The tool's answer is longer than {MAX_RESULT_CHARS:,} characters."
            ) from None
        if not line.endswith(b"\n"):  # the end of its output, perhaps after part of a line
            log.warning("tool worker %d exited during a call", self.pid)
            raise ToolError(STOPPED)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
