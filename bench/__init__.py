"""jetkit's benchmark suite: ``python -m bench`` (full) or ``python -m bench --quick``.

Every scenario runs jetkit and its baselines (raw nats-py, FastStream, Redis Streams)
against servers the bench starts itself, alternating runs, and reports medians and
jetkit/baseline ratios (see ``bench/README.md``).
"""
