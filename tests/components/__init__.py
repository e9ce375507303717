"""Parts of the gateway working together below HTTP: the core, a WebSocket session, agents and
the upstream policy, JWKS, logging; on real Redis and real fake servers, with no HTTP front."""
