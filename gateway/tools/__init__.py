"""Tools an agent may let the model call: built-in ones and any registered by dotted path."""
