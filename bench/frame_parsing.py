"""How long parsing one client frame takes: the text of a WebSocket frame to a typed request.

    .venv/bin/python -m bench.frame_parsing

Prints microseconds per frame (the best of several rounds) for a short completion frame, a
full one and a ping. Run it from another checkout's root to compare two versions.
"""

from __future__ import annotations

import json
import timeit

from gateway.protocol.frames import parse_client_frame

FRAMES = {
    "completion": json.dumps(
        {"type": "completion", "id": "r1", "message": "What is the capital of France?"}
    ),
    "completion (every field)": json.dumps(
        {
            "type": "completion",
            "id": "r1",
            "message": "What is the capital of France?",
            "model": "echo",
            "agent": "chat",
            "conversation_id": "trip-planning",
            "temperature": 0.5,
            "max_tokens": 256,
            "conversation_history": [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi!"},
            ],
            "sources": ["plain", {"content": "c", "title": "t", "url": "u"}],
            "stop": ["\n\n"],
            "tools": [{"type": "function", "function": {"name": "clock"}}],
            "tool_choice": "auto",
        }
    ),
    "ping": '{"type":"ping"}',
}
ROUNDS = 200
NUMBER = 2_000


def micros(text: str) -> float:
    timer = timeit.Timer(lambda: parse_client_frame(text))
    return min(timer.repeat(ROUNDS, NUMBER)) / NUMBER * 1e6


def main() -> None:
    for name, text in FRAMES.items():
        print(f"{name:26} {micros(text):6.2f} µs")


if __name__ == "__main__":
    main()
