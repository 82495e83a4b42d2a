"""A small service on ``jk.App``: orders billed by a durable subscriber (manual acks,
retries with backoff, a dead-letter queue), dead letters reported, quotes answered by a
responder, the topics declared when the app starts.

``jetkit run jetkit.examples.service:app`` serves it; ``python -m jetkit.examples.service``
serves it as ``app.run()`` does, with a small client beside it (``__main__.py``)::

    client -- shop.orders ------ bill (durable shop-billing, MANUAL ack, 3 calls, backoff)
           |                         `-- shop.orders.dead -- report_dead_letter (durable)
           `- shop.quote (request/reply) -- quote (a queue group named after it)

An order whose amount is not positive fails every call and ends in the dead-letter
queue. The store is ``./jetstream-store`` unless the runner says otherwise: run it again
and the durables resume where they stopped. Copied into a file of its own, ``python
service.py`` runs it.
"""

# --8<-- [start:service]
from __future__ import annotations

import collections
import dataclasses
import datetime as dt

import jetkit as jk

ORDERS = "shop.orders"
DEAD_LETTERS = "shop.orders.dead"
QUOTES = "shop.quote"
TAX_RATE = 0.2


@dataclasses.dataclass
class Order:
    order_id: str
    amount: float


@dataclasses.dataclass
class Cart:
    prices: list[float]


@dataclasses.dataclass
class Quote:
    subtotal: float
    tax: float
    total: float


app = jk.App(
    store_dir="./jetstream-store",  # `jetkit run --store-dir DIR` overrides it
    default_mode=jk.TopicMode.JETSTREAM,
    drain_timeout=10,  # SIGTERM: handlers in flight get this long to finish and ack
)
counts: collections.Counter[str] = collections.Counter()  # what this process did


@app.on_startup
async def declare_topics(s: jk.Stream) -> None:
    await s.declare_topic(ORDERS, max_age=dt.timedelta(days=7))
    await s.declare_topic(DEAD_LETTERS)


@app.subscriber(
    ORDERS,
    durable="shop-billing",
    ack=jk.AckPolicy.MANUAL,  # acked when bill returns; a raise is retried
    max_deliver=3,
    backoff=[0.5, 1.0],
    dlq=DEAD_LETTERS,
    start_at=jk.StartAt.ALL,  # a new durable bills the orders stored before it existed
)
async def bill(order: Order, msg: jk.Message) -> None:
    if order.amount <= 0:
        counts["failed"] += 1
        print(f"❗ {order.order_id}: cannot bill it, call {msg.num_delivered} of 3")
        raise ValueError(f"amount must be positive, got {order.amount}")
    counts["billed"] += 1
    print(f"💳 billed {order.order_id}: {order.amount:.2f}")


@app.subscriber(DEAD_LETTERS, durable="shop-dead-letters", start_at=jk.StartAt.ALL)
async def report_dead_letter(msg: jk.Message) -> None:
    counts["dead"] += 1
    calls, error = msg.headers.get("Jetkit-Deliveries"), msg.headers.get("Jetkit-Error")
    print(f"💀 dead letter after {calls} calls: {msg.data.decode()} ({error})")


@app.responder(QUOTES)
async def quote(cart: Cart) -> Quote:
    if not cart.prices:
        raise ValueError("an empty cart has no quote")
    counts["quoted"] += 1
    subtotal = round(sum(cart.prices), 2)
    tax = round(subtotal * TAX_RATE, 2)
    return Quote(subtotal=subtotal, tax=tax, total=round(subtotal + tax, 2))


@app.on_shutdown
async def say_stopping(s: jk.Stream) -> None:
    print("🛑 shop: stopping; handlers in flight finish and ack, the rest goes back")


if __name__ == "__main__":  # python service.py
    app.run()
# --8<-- [end:service]
