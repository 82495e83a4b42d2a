"""``jetkit.sync.Stream``: jetkit without asyncio, for scripts, notebooks, Flask and Django.

One pattern: each sync Stream runs a ``jk.Stream`` on its own event loop in a private
daemon thread, and every method hands the async call to that loop and waits for it::

    with jetkit.sync.Stream.open() as s:
        s.subscribe("orders.new", handle)      # handle is a plain function
        s.publish("orders.new", b"...")

- Errors: the async call's own ``jk.*`` exception is raised in the caller's thread
  (a bad topic is ``jk.InvalidTopicError`` before anything is sent).
- Timeouts: none added. Every call is bounded by its async counterpart's own limit
  (``publish_timeout``, ``request(timeout=)``, the JetStream API timeout, drain's
  ``drain_timeout``), so a sync call waits exactly as long as the async one would.
  Ctrl-C while waiting cancels the call on the loop and raises KeyboardInterrupt;
  during ``close()`` it only cuts the drain short: the close still stops the server
  and frees the store, and KeyboardInterrupt comes once it is done.
- Handlers are plain functions (``async def`` is refused: use ``jk.Stream`` for those).
  They run in the Stream's handler threads, not on the loop, so a handler may call the
  Stream (publish, request, subscribe, admin calls). Decoding follows the annotations
  as in the async API. With ``AckPolicy.MANUAL`` returning acks and raising naks (retry,
  then the DLQ); a handler that takes the ``jk.Message`` settles it explicitly with
  ``s.ack(msg)``, ``s.nak(msg)``, ``s.term(msg)`` or ``s.in_progress(msg)``.
- Deadlocks are refused, not suffered: a call from the loop thread itself, or
  ``close()``/``Subscription.drain()`` from one of this Stream's handlers (they wait for
  that very handler), raises ``jk.ConfigError`` naming the fix.
- Shutdown: ``close()`` (or leaving the ``with`` block) drains every subscription as the
  async close does, stops the server and ends the loop thread; closing twice is fine and
  a closed Stream raises ``jk.StreamClosedError``. A Stream that is garbage collected
  unclosed is closed in the background, and one still open at interpreter exit is closed
  by an ``atexit`` hook (which holds no reference to the Stream itself).
- ``os.fork()``: the child has no loop thread, so the Stream stays the parent's. In
  the child every call raises ``jk.ForkedStreamError`` at once and ``close()`` (and the
  exit hook) returns at once, touching neither the parent's server nor its connection.
"""

from __future__ import annotations

from ._sync_runtime import Subscription
from ._sync_stream import Stream

__all__ = ["Stream", "Subscription"]
