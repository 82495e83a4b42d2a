"""``python -m jetkit.examples.service``: the service of ``jetkit.examples.service``,
served as ``app.run()`` serves it (SIGTERM or Ctrl+C: handlers in flight finish and ack,
a second signal stops at once), with a client beside it that places an order and asks
for a quote every ``--interval`` seconds; every fourth order cannot be billed and ends
in the dead-letter queue. ``--duration`` stops it as SIGTERM does; ``--no-client``
serves the app alone, as ``jetkit run jetkit.examples.service:app`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
import sys
from collections.abc import Sequence

import jetkit as jk
from jetkit.examples.basic import positive, run_example, sleep_or_stop
from jetkit.examples.service import ORDERS, QUOTES, Cart, Order, Quote, app, counts

BAD_EVERY = 4  # every fourth order has amount 0: three failed calls, then a dead letter


async def client(s: jk.Stream, interval: float, stopping: asyncio.Event) -> None:
    """Place an order and ask for a quote every ``interval`` seconds until ``stopping``."""
    for n in itertools.count(1):
        amount = 0.0 if n % BAD_EVERY == 0 else round(9.99 + n, 2)
        ack = await s.publish_json_stored(ORDERS, Order(f"order-{n}", amount))
        counts["placed"] += 1
        print(f"📤 placed order-{n} ({amount:.2f}), stored as seq {ack.seq}")
        cart = Cart([amount, 5.0])
        answer: Quote = await s.request_json(QUOTES, cart, Quote, timeout=5)
        print(f"🧾 quote for {cart.prices}: {answer.subtotal:.2f} + tax = {answer.total:.2f}")
        if await sleep_or_stop(stopping, interval):
            return


async def main_async(args: argparse.Namespace) -> int:
    """What ``app.run()`` does (``run_until_stopped``), plus a client that starts once
    every handler is registered and stops before the app does."""
    logging.basicConfig(level=logging.WARNING, format="   %(message)s")  # retries, on stderr
    stopping = asyncio.Event()
    running: list[asyncio.Task[None]] = []

    def ready() -> None:
        where = args.store_dir or "./jetstream-store"
        print(f"✅ shop: ready (store {where}); SIGTERM or Ctrl+C stops it")
        if args.duration is not None:  # stop as SIGTERM would
            asyncio.get_running_loop().call_later(
                args.duration, signal.raise_signal, signal.SIGTERM
            )
        if not args.no_client:
            running.append(asyncio.create_task(client(app.stream, args.interval, stopping)))

    async def stop_client(s: jk.Stream) -> None:
        stopping.set()
        await asyncio.gather(*running)

    app.on_shutdown(stop_client)  # the last hook declared runs first
    print("jetkit service example: orders, retries, a DLQ, quotes\nPress Ctrl+C to stop\n")
    overrides: jk.OpenOptions = {} if args.store_dir is None else {"store_dir": args.store_dir}
    await app.run_until_stopped(ready=ready, **overrides)
    print(
        f"📊 this process: {counts['placed']} placed, {counts['billed']} billed, "
        f"{counts['failed']} failed calls, {counts['dead']} dead letters, "
        f"{counts['quoted']} quotes"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jetkit.examples.service",
        description="A jk.App service (orders, retries, a DLQ, quotes) and a client.",
    )
    p.add_argument(
        "--duration",
        type=positive,
        default=None,
        help="stop by itself this many seconds after it is ready, as SIGTERM does "
        "(default: run until Ctrl+C or SIGTERM)",
    )
    p.add_argument("--interval", type=positive, default=1.0, help="seconds between orders")
    p.add_argument("--store-dir", default=None, help="the store (default: ./jetstream-store)")
    p.add_argument(
        "--no-client", action="store_true", help="serve the app alone, as `jetkit run` does"
    )
    args = p.parse_args(argv)
    return run_example(lambda: main_async(args))


if __name__ == "__main__":
    sys.exit(main())
