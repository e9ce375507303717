"""`chat-gateway chat`: talk to a gateway from a terminal.

Answers stream as they arrive; Ctrl-C stops the current answer (a cancel) and the session
goes on; Ctrl-C at the prompt, Ctrl-D or `/quit` leaves. Status lines (reconnecting, notices,
the conversation id) go to stderr so stdout holds the conversation only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

from gateway.auth.tokens import mint_token
from gateway.config import ConfigError, Settings
from gateway.server.devmode import SECRET_FILE, dev_secret
from gateway_client import (
    Chunk,
    ConnectionState,
    Done,
    ErrorEvent,
    GatewayClient,
    GatewayError,
    Notice,
    Run,
)
from gateway_client.tokens import TokenRefresh

DEFAULT_URL = "http://127.0.0.1:8000"
DEV_USER = "dev"  # the same user as the dev page's token, so both see the same conversations
DEV_TOKEN_TTL = 3600


class ChatError(Exception):
    """A problem the user can fix, said in words (exit status 2)."""


def add_parser(commands: Any) -> None:
    chat = commands.add_parser("chat", help="chat with a gateway from the terminal")
    chat.add_argument("--url", help=f"the gateway (CHAT_GATEWAY_URL, else {DEFAULT_URL})")
    chat.add_argument("--token", help="a JWT (CHAT_GATEWAY_TOKEN; dev mode mints one)")
    chat.add_argument("--model", help="the model to answer with")
    chat.add_argument("--agent", help="the agent to answer with")
    chat.add_argument("--conversation", help="a conversation id to continue (or start)")


def main(args: argparse.Namespace) -> int:
    try:
        url, token, refresh = credentials(args, os.environ)
    except (ChatError, ConfigError, OSError) as exc:
        print(f"chat-gateway chat: {exc}", file=sys.stderr)
        return 2
    session = Session(url, token, refresh, args.model, args.agent, args.conversation)
    return asyncio.run(session.run())


def credentials(
    args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]
) -> tuple[str, str, TokenRefresh | None]:
    """The URL and token to use, and how to renew the token when it can be renewed: a dev
    gateway's token is minted from the secret in its data folder, found from the current one."""
    url = args.url or environ.get("CHAT_GATEWAY_URL") or DEFAULT_URL
    token = args.token or environ.get("CHAT_GATEWAY_TOKEN")
    if token:
        return url, token, None
    settings = Settings.from_env(environ)
    if not settings.dev_mode:
        raise ChatError("Pass --token (or set CHAT_GATEWAY_TOKEN): this gateway has a JWT key.")
    if not (settings.data_dir / SECRET_FILE).exists():
        raise ChatError(
            f"Pass --token, or run this in the folder of a dev-mode gateway "
            f"(no dev secret in {settings.data_dir}/)."
        )
    dev = settings.with_secret(dev_secret(settings.data_dir))

    def mint() -> str:
        return mint_token(dev, DEV_USER, DEV_TOKEN_TTL)

    return url, mint(), mint


def describe(state: ConnectionState) -> str | None:
    """A status line for a connection change, or None when there is nothing to say."""
    if state.state == "reconnecting":
        if state.close_code == 4401:
            return "(the token was refused; getting a new one)"
        why = state.error.message if state.error else _close_reason(state)
        delay = state.delay or 0.0
        return f"({why} Reconnecting in {delay:.1f} s.)"
    if state.state == "http":
        return "(WebSockets do not get through; streaming over HTTP instead.)"
    return None


def _close_reason(state: ConnectionState) -> str:
    known = {
        1012: "The gateway is restarting.",
        1011: "The gateway stopped answering.",
        4008: "The connection fell behind.",
    }
    if state.close_code in known:
        return known[state.close_code]
    if state.reason:
        return state.reason.rstrip(".") + "."
    return "The connection was lost."


class Lines:
    """Lines from stdin, read in a daemon thread; None at the end of input. The thread reads
    the file descriptor itself: a daemon thread blocked inside `sys.stdin` holds its lock, and
    the interpreter aborts at exit when it cannot take it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._loop = loop
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        pending = b""
        while data := os.read(sys.stdin.fileno(), 65536):
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._put(line.decode(errors="replace"))
        if pending:
            self._put(pending.decode(errors="replace"))
        self._put(None)

    def _put(self, line: str | None) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, line)

    async def next(self) -> str | None:
        return await self._queue.get()


@dataclass
class Session:
    url: str
    token: str
    refresh: TokenRefresh | None
    model: str | None
    agent: str | None
    conversation_id: str | None
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr

    def __post_init__(self) -> None:
        self._current: Run | None = None
        self._leave = asyncio.Event()
        self._reconnected_note = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        lines = Lines(loop)
        client = GatewayClient(
            self.url, token=self.token, token_refresh=self.refresh, on_state=self._on_state
        )
        try:
            async with client:
                if not await self._until(client.connect()):
                    return 0
                self._note(f"(connected to {self.url} as {client.user}; Ctrl-C stops an answer)")
                await self._history(client)
                await self._converse(client, lines)
        except GatewayError as exc:
            self._note(f"chat-gateway chat: {_explain(exc)}")
            return 1
        return 0

    async def _until(self, connecting: Any) -> bool:
        """Connect (retrying, with status lines), unless the user leaves first. Input typed
        meanwhile waits for the connection."""
        connect = asyncio.ensure_future(connecting)
        leave = asyncio.ensure_future(self._leave.wait())
        done, _ = await asyncio.wait({connect, leave}, return_when=asyncio.FIRST_COMPLETED)
        leave.cancel()
        if connect in done:
            connect.result()  # raises GatewayError when the token is refused
            return True
        connect.cancel()
        return False

    async def _history(self, client: GatewayClient) -> None:
        if self.conversation_id is None:
            return
        view = await client.conversation(self.conversation_id)
        if view is None:
            self._note(f"(new conversation {self.conversation_id})")
            return
        # The newest page is what a terminal can show; older messages stay on the server.
        if view.get("next_cursor"):
            self._note("(earlier messages are not shown)")
        for message in view.get("messages", []):
            self._show_stored(message)
        generation = view.get("generation") or {}
        if generation.get("status") == "running":
            self._note("(an answer is still being written:)")
            await self._stream(client.attach(str(generation["id"])))

    def _show_stored(self, message: dict[str, Any]) -> None:
        if message.get("role") == "user":
            self.out.write(f"you> {message.get('content', '')}\n")
            return
        status = message.get("status")
        mark = {"cancelled": " (stopped)", "incomplete": " (incomplete)"}.get(str(status), "")
        self.out.write(f"{message.get('content', '')}{mark}\n")
        self.out.flush()

    async def _converse(self, client: GatewayClient, lines: Lines) -> None:
        while not self._leave.is_set():
            if sys.stdin.isatty():
                self.out.write("you> ")
                self.out.flush()
            line = await self._next_line(lines)
            if line is None or line.strip() == "/quit":
                return
            if not line.strip():
                continue
            if line.startswith("/"):
                await self._command(client, line.strip())
                continue
            run = client.complete(
                line,
                model=self.model,
                agent=self.agent,
                conversation_id=self.conversation_id,
            )
            await self._stream(run)
            if self.conversation_id is None and run.conversation_id is not None:
                self.conversation_id = run.conversation_id
                self._note(f"(conversation {run.conversation_id}; continue it with --conversation)")

    async def _command(self, client: GatewayClient, line: str) -> None:
        """`/regenerate`, `/edit <text>`, `/versions`, `/switch <message id>`, `/fork`: the
        conversation's branches (docs/client-python.md)."""
        name, _, rest = line.partition(" ")
        if name not in BRANCH_COMMANDS:
            self._note(f"(commands: {', '.join(BRANCH_COMMANDS)}, /quit)")
            return
        if self.conversation_id is None:
            self._note("(no conversation yet: send a message first)")
            return
        try:
            await BRANCH_COMMANDS[name](self, client, self.conversation_id, rest.strip())
        except GatewayError as exc:
            self._note(f"({exc.message})")

    async def _latest(self, client: GatewayClient, conversation_id: str) -> list[dict[str, Any]]:
        view = await client.conversation(conversation_id, limit=2)
        return [] if view is None else list(view.get("messages", []))

    async def _regenerate(self, client: GatewayClient, conversation_id: str, _: str) -> None:
        answers = [
            m for m in await self._latest(client, conversation_id) if m["role"] == "assistant"
        ]
        if not answers:
            self._note("(no answer to make again)")
            return
        run = client.regenerate(
            answers[-1]["id"], conversation_id=conversation_id, model=self.model, agent=self.agent
        )
        await self._stream(run)

    async def _edit(self, client: GatewayClient, conversation_id: str, text: str) -> None:
        asked = [m for m in await self._latest(client, conversation_id) if m["role"] == "user"]
        if not asked or not text:
            self._note("(/edit <text> replaces the last question, keeping the earlier version)")
            return
        parent = asked[-1]["parent_id"] or ""
        run = client.complete(
            text,
            model=self.model,
            agent=self.agent,
            conversation_id=conversation_id,
            parent_id=parent,
        )
        await self._stream(run)

    async def _versions(self, client: GatewayClient, conversation_id: str, _: str) -> None:
        for message in await self._latest(client, conversation_id):
            branch = message.get("branch")
            if branch:
                others = ", ".join(branch["ids"])
                place = f"{branch['index'] + 1}/{branch['count']}"
                self._note(f"({message['role']} {message['id']}: version {place} of {others})")
        self._note("(/switch <id> shows another version)")

    async def _switch(self, client: GatewayClient, conversation_id: str, message_id: str) -> None:
        await client.http.switch_branch(conversation_id, message_id)
        view = await client.conversation(conversation_id)
        for message in [] if view is None else view.get("messages", []):
            self._show_stored(message)

    async def _fork(self, client: GatewayClient, conversation_id: str, _: str) -> None:
        latest = await self._latest(client, conversation_id)
        if not latest:
            self._note("(nothing to fork)")
            return
        self.conversation_id = await client.http.fork(conversation_id, latest[-1]["id"])
        self._note(f"(forked: conversation {self.conversation_id}; it goes on from here)")

    async def _next_line(self, lines: Lines) -> str | None:
        reading = asyncio.ensure_future(lines.next())
        leave = asyncio.ensure_future(self._leave.wait())
        done, _ = await asyncio.wait({reading, leave}, return_when=asyncio.FIRST_COMPLETED)
        leave.cancel()
        if reading in done:
            return reading.result()
        reading.cancel()
        return None

    async def _stream(self, run: Run) -> None:
        self._current = run
        try:
            async for item in run:
                self._show(item)
        finally:
            self._current = None

    def _show(self, item: Any) -> None:
        if isinstance(item, Chunk):
            self.out.write(item.content)
        elif isinstance(item, Done):
            self.out.write("\n(stopped)\n" if item.finish_reason == "cancelled" else "\n")
        elif isinstance(item, ErrorEvent):
            wait = f" Try again in {item.retry_after:.0f} s." if item.retry_after else ""
            self.out.write(f"\n(failed: {item.message}{wait})\n")
        elif isinstance(item, Notice):
            self._note(f"(note: {item.message})")
        self.out.flush()

    def _interrupt(self) -> None:
        """Ctrl-C: stop the answer being written, or leave when there is none."""
        if self._current is not None:
            self._current.cancel()
        else:
            self._leave.set()

    def _on_state(self, state: ConnectionState) -> None:
        line = describe(state)
        if line is not None:
            self._note(line)
            self._reconnected_note = True
        elif state.state == "connected" and self._reconnected_note:
            self._reconnected_note = False
            self._note("(reconnected)")

    def _note(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()


BRANCH_COMMANDS: dict[str, Callable[[Session, GatewayClient, str, str], Awaitable[None]]] = {
    "/regenerate": Session._regenerate,
    "/edit": Session._edit,
    "/versions": Session._versions,
    "/switch": Session._switch,
    "/fork": Session._fork,
}


def _explain(error: GatewayError) -> str:
    if error.code == "unauthorized":
        return f"{error.message} Get a new token (--token) and start again."
    return error.message
