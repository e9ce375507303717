"""Everything the gateway keeps lives in Redis; this package is the only one that talks to it."""
