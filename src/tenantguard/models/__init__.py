"""The model gateway's pure parts: OpenAI's chat shape and Anthropic's translation (`chat`),
prices (`prices`), and a local provider stub for tests, demos and benchmarks (`stub`)."""
