"""The gateway's APIs over real HTTP and WebSocket connections to a gateway served by uvicorn."""
