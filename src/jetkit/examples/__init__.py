"""Runnable examples that use only jetkit's public API (``jetkit examples`` lists them)."""

# (name, what it shows, how to run it)
EXAMPLES = [
    (
        "demo",
        "order processing: durable consumers, retries with backoff, a DLQ, replay, resume",
        "jetkit demo",
    ),
    (
        "basic",
        "pub/sub: fan-out to every subscriber, and a queue group sharing the work",
        "python -m jetkit.examples.basic",
    ),
    (
        "requestreply",
        "a calculator service: a queue group of responders, errors as jk.RemoteError",
        "python -m jetkit.examples.requestreply",
    ),
    (
        "service",
        "a jk.App service: a durable subscriber with retries and a DLQ, a responder, hooks",
        "python -m jetkit.examples.service",
    ),
]
