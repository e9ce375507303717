"""What the tests share, apart from their fixtures (which stay in the conftest.py files and
build on this): one module per thing a test needs.

- `redis`: private redis-server processes, started as the gateway starts its embedded one.
- `serving`: free loopback ports, an ASGI app under uvicorn in a thread.
- `tokens`: the tests' JWT secret and tokens.
- `upstream`: the fake OpenAI-compatible upstream; `hostile_upstream`, a broken one over raw
  sockets; `jwks_server`, signing keys served as a JWKS; `refusing_proxy`, a proxy that
  refuses WebSocket upgrades.
- `processes`: gateways as real processes (`python -m gateway serve`).
- `ws`: the WebSocket test client and `until_done`, the one reader of a request's frames;
  `raw_ws`, a client written frame by frame.
- `sse`: the one reader of server-sent events.
- `polling`: `settle`, the one way to wait for something observed from outside.
- `exposition`: a parser of the Prometheus text format, apart from the code under test.
- `gateways`, `bystander`, `log_capture`: what the adversarial checks observe (a gateway's
  tasks and memory, another user's stream, log records).
- `workers`: worker processes through /proc (tool workers, `serve --workers N`).
"""
