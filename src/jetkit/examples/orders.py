"""The JetStream durable messaging example: an order-processing system on jetkit.

Run it with ``jetkit demo`` (or ``python -m jetkit.examples.orders``). Its services
share one embedded NATS server whose data lives in ``./jetstream-store``:

    Publishers --+-- orders.events --+-- Order Processor (durable: order-processor)
                 |                   +-- Analytics Service (durable: analytics-processor)
                 +-- users.registrations -- User Verification Service
                 +-- orders.followups (scheduled) -- Follow-up (durable: followup-notifier)

A shipped order comes with a follow-up to its customer, due two order intervals later
(``deliver_after``): the server holds it until then, also across a restart of the demo.

Stop it with Ctrl+C and start it again: the durable consumers resume where they
stopped and the publishers continue numbering after the last stored order and user.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import jetkit as jk
from jetkit.examples.basic import sleep_or_stop, stop_event

ORDERS = "orders.events"
USERS = "users.registrations"
DEAD_ORDERS = "failed.orders.events"
FOLLOWUPS = "orders.followups"
STATUSES = ["created", "paid", "shipped", "delivered"]
MAX_DELIVER = 3


@dataclasses.dataclass
class OrderEvent:
    order_id: str
    customer_id: str
    amount: float
    status: str
    timestamp: dt.datetime
    items: list[str]


@dataclasses.dataclass
class UserRegistration:
    user_id: str
    name: str
    email: str
    verified: bool
    timestamp: dt.datetime


def make_order(n: int) -> OrderEvent:
    """Order n: statuses cycle, amounts grow by $1.99 from $11.99."""
    return OrderEvent(
        order_id=f"order-{n}",
        customer_id=f"customer-{(n - 1) % 7 + 1}",
        amount=round(10 + 1.99 * n, 2),
        status=STATUSES[(n - 1) % len(STATUSES)],
        timestamp=dt.datetime.now(dt.UTC),
        items=[f"sku-{n % 5 + 1}"],
    )


def make_user(n: int) -> UserRegistration:
    """User n: every third user registers already verified."""
    return UserRegistration(
        user_id=f"user-{n}",
        name=f"User {n}",
        email=f"user{n}@example.com",
        verified=n % 3 == 0,
        timestamp=dt.datetime.now(dt.UTC),
    )


def event_id(data: bytes, field: str) -> str | None:
    """The id (``order-7``) in an event the demo published; None for any other payload
    (``jetkit pub``, the README quickstart, ... may share the topic)."""
    try:
        value = json.loads(data).get(field)
    except (ValueError, AttributeError):  # not JSON, or not an object
        return None
    prefix = field.removesuffix("_id")  # order_id: order-7
    ok = isinstance(value, str) and re.fullmatch(rf"{prefix}-[0-9]{{1,18}}", value)
    return value if ok else None


async def last_number(s: jk.Stream, topic: str, field: str) -> int:
    """The highest number among the stored events' ids (0 when there is none).

    Reads the whole topic once: the newest message may be someone else's, and a
    message published by hand (``jetkit pub``) may hold a higher number than the last
    the demo published.
    """
    await s.declare_topic(topic)
    info = await s.topic_info(topic)
    if info.messages == 0:
        return 0
    highest = 0
    done = asyncio.Event()

    async def scan(msg: jk.Message) -> None:
        nonlocal highest
        found = event_id(msg.data, field)
        if found is not None:
            highest = max(highest, int(found.rsplit("-", 1)[1]))
        if (msg.seq or 0) >= info.last_seq or msg.pending == 0:
            done.set()

    sub = await s.subscribe(topic, scan, start_at=jk.StartAt.ALL, ack=jk.AckPolicy.NONE)
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await sub.stop()
    return highest


@dataclasses.dataclass
class Options:
    store_dir: str = "./jetstream-store"
    duration: float | None = None  # stop by itself after this many seconds
    order_interval: float = 3.0
    user_interval: float = 5.0
    fail_rate: float = 0.0  # chance that processing an order fails (0..1)
    analytics_delay: float = 3.0
    metrics_port: int | None = None  # serve Prometheus metrics there (0: a free port)


class Demo:
    def __init__(self, s: jk.Stream, args: Options) -> None:
        self.s = s
        self.args = args

    async def process_order(self, order: OrderEvent, msg: jk.Message) -> None:
        print(
            f"📦 Processing order: {order.order_id} (status: {order.status}, "
            f"amount: ${order.amount:.2f})"
        )
        await asyncio.sleep(0.05)  # the work
        if random.random() < self.args.fail_rate:
            then = "giving up" if msg.num_delivered >= MAX_DELIVER else "it will be retried"
            print(
                f"   ❌ Order {order.order_id} failed (attempt {msg.num_delivered}/"
                f"{MAX_DELIVER}); {then}"
            )
            raise RuntimeError("simulated processing failure")
        done = {
            "created": "validated and ready for payment",
            "paid": "payment confirmed, preparing shipment",
            "shipped": "handed to the carrier",
            "delivered": "delivered to the customer",
        }
        print(f"   ✅ Order {order.order_id} {done.get(order.status, 'processed')}")

    async def follow_up(self, order: OrderEvent) -> None:
        print(f"📬 Follow-up for {order.order_id}: asking {order.customer_id} whether it arrived")

    async def verify_user(self, user: UserRegistration) -> None:
        if user.verified:
            print(f"👤 ✅ {user.name} is already verified")
            return
        await asyncio.sleep(0.2)  # sending the email
        print(f"👤 📧 Sending verification email to {user.name} ({user.email})")

    async def analyse(self, order: OrderEvent) -> None:
        local = order.timestamp.astimezone().strftime("%H:%M:%S")
        print(
            f"📊 Analytics: Order {order.order_id} processed "
            f"(status: {order.status}, timestamp: {local})"
        )

    async def dead_letter(self, msg: jk.Message) -> None:
        """Print a dead letter: an order that failed every attempt, or a message on
        orders.events that is not an order at all (a poison message: it cannot be
        decoded, so it goes to the DLQ at once)."""
        headers = msg.headers
        what = event_id(msg.data, "order_id") or (
            f"seq {headers.get('Jetkit-Original-Seq')} of {ORDERS} (not a demo order)"
        )
        attempts = headers.get("Jetkit-Deliveries", "?")
        plural = "" if attempts == "1" else "s"
        print(
            f"💀 Dead letter: {what} after {attempts} attempt{plural} "
            f"({headers.get('Jetkit-Error')})"
        )

    async def publish_orders(self, stop: asyncio.Event) -> None:
        n = await last_number(self.s, ORDERS, "order_id")
        while not stop.is_set():
            n += 1
            order = make_order(n)
            if not await self._until_acked(
                stop, order.order_id, ORDERS, order, msg_id=order.order_id
            ):
                return
            print(f"📤 Published order event: {order.order_id} (status: {order.status})")
            if order.status == "shipped":  # the server holds it until it is due
                await self._until_acked(
                    stop,
                    f"the follow-up of {order.order_id}",
                    FOLLOWUPS,
                    order,
                    deliver_after=2 * self.args.order_interval,
                    msg_id=f"followup-{order.order_id}",
                )
            await sleep_or_stop(stop, self.args.order_interval)

    async def publish_users(self, stop: asyncio.Event) -> None:
        n = await last_number(self.s, USERS, "user_id")
        while not stop.is_set():
            n += 1
            user = make_user(n)
            if not await self._until_acked(stop, user.user_id, USERS, user, msg_id=user.user_id):
                return
            state = "already verified" if user.verified else "needs verification"
            print(f"📤 Published user registration: {user.name} ({state})")
            await sleep_or_stop(stop, self.args.user_interval)

    async def _until_acked(
        self, stop: asyncio.Event, what: str, topic: str, value: object, **options: Any
    ) -> bool:
        """Publish until the server acknowledges it (True) or the demo stops (False).

        A publish can fail while the server is restarted (say it was killed); the same
        ``msg_id`` makes sending it again safe: the server stores it once.
        """
        while True:
            try:
                await self.s.publish_json(topic, value, **options)
                return True
            except jk.JetkitError as exc:
                if stop.is_set():
                    return False
                print(f"⚠️  {what} was not acknowledged ({exc}); sending it again")
            if await sleep_or_stop(stop, 1.0):
                return False

    async def run(self, stop: asyncio.Event) -> None:
        s = self.s
        await s.declare_topic(ORDERS)
        await s.declare_topic(USERS)
        await s.declare_topic(FOLLOWUPS)
        print("📦 Starting Order Processing Service (durable consumer)")
        await s.subscribe(
            ORDERS,
            self.process_order,
            durable="order-processor",
            ack=jk.AckPolicy.MANUAL,
            max_deliver=MAX_DELIVER,
            backoff=[1, 5, 30],
            dlq=DEAD_ORDERS,
            start_at=jk.StartAt.NEW,
        )
        await s.subscribe(DEAD_ORDERS, self.dead_letter, durable="dlq-watcher")
        await s.subscribe(FOLLOWUPS, self.follow_up, durable="followup-notifier")
        print("👤 Starting User Verification Service")
        await s.subscribe(USERS, self.verify_user, concurrency=2)
        print("📤 Starting Order Event Publisher")
        print("📤 Starting User Registration Publisher")
        tasks = [
            asyncio.create_task(self.publish_orders(stop)),
            asyncio.create_task(self.publish_users(stop)),
        ]
        if not await sleep_or_stop(stop, self.args.analytics_delay):
            print("📊 Starting Analytics Service (replaying historical data)")
            hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
            await s.subscribe(
                ORDERS,
                self.analyse,
                durable="analytics-processor",
                start_at=jk.StartAt.BY_START_TIME,
                start_time=hour_ago,
                concurrency=1,
            )
        await stop.wait()
        await asyncio.gather(*tasks)


BANNER = """JetStream Durable Messaging Example
This example demonstrates:
- Durable message storage and replay
- Consumer acknowledgments
- Stream persistence across restarts
- Different delivery semantics
Press Ctrl+C to stop
"""


async def main(args: Options) -> int:
    logging.basicConfig(level=logging.WARNING, format="   %(message)s")
    print(BANNER)
    stop = stop_event(args.duration)
    store = Path(args.store_dir).absolute()
    async with jk.Stream.open(
        store_dir=store, default_mode=jk.TopicMode.JETSTREAM, metrics_port=args.metrics_port
    ) as s:
        if s.metrics_url is not None:
            print(f"📈 Prometheus metrics at {s.metrics_url}")
        await Demo(s, args).run(stop)
        print("\n🛑 Shutting down gracefully: finishing in-flight messages...")
    print(f"💾 All messages are persisted in {store}")
    print(
        f"   Run `jetkit demo --store-dir {args.store_dir}` again: the durable consumers "
        "resume where they left off."
    )
    return 0


if __name__ == "__main__":
    # the demo's command line is `jetkit demo`'s (the command line runs this module, so
    # this module does not import it): hand over to it, in this process
    os.execv(sys.executable, [sys.executable, "-m", "jetkit", "demo", *sys.argv[1:]])
