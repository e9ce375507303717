"""Agents turn a request and its history into a stream of events."""
