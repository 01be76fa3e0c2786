"""Sessions: who is behind a request, and (later) what they did before it."""
