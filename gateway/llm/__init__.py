"""Upstream models. The only package that imports `openai`."""
