"""OpenAI-compatible HTTP layer over the `constrained` engine."""
