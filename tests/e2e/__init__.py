"""End to end: several gateway processes, the command line, the clients, the workers, traces."""
