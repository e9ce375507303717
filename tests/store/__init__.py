"""The store against real Redis: the suite's own server, or a Redis Cluster of its own."""
