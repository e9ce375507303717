"""Unit tests: the pure parts, one module at a time, with no server, Redis or network."""
