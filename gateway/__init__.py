"""chat-gateway: a WebSocket and SSE gateway between chat front-ends and LLMs."""

__version__ = "0.1.0"
