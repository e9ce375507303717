"""The OpenAI dialect: the chat completions API's wire format (`dialect.py`) and its stream
reader (`stream.py`). With the bounded transport, the only importer of `openai`."""
