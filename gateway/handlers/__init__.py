"""Transports: each translates its wire format to the core and events back. No Redis, no openai."""
