"""Models: the upstream policy, one dialect package per upstream API, the echo model, and the
registry of providers by name. The only package that imports `openai` or `aiohttp`."""
