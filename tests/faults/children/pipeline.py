"""Two pipeline stages in one process: IN -> MID -> OUT, each a durable consumer.
Usage: pipeline.py STORE IN MID OUT MODE, MODE ``emit`` (subscribe(..., emit=)) or
``publish`` (the handler publishes, then returns: acked after; at least once). The test
SIGKILLs it, and the server, in turns.
"""

import asyncio
import sys

import jetkit as jk


async def main(store: str, source: str, mid: str, out: str, mode: str) -> None:
    s = await jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM)
    common = {"start_at": jk.StartAt.ALL, "concurrency": 16, "ack_wait": 5.0}
    if mode == "emit":

        async def first(data: bytes) -> bytes:
            return b"1." + data

        async def second(data: bytes) -> bytes:
            return b"2." + data

        await s.subscribe(source, first, durable="stage1", emit=mid, **common)  # type: ignore[arg-type]
        await s.subscribe(mid, second, durable="stage2", emit=out, **common)  # type: ignore[arg-type]
    else:

        async def first_plain(data: bytes) -> None:
            await s.publish(mid, b"1." + data)

        async def second_plain(data: bytes) -> None:
            await s.publish(out, b"2." + data)

        manual = {**common, "ack": jk.AckPolicy.MANUAL}
        await s.subscribe(source, first_plain, durable="stage1", **manual)  # type: ignore[arg-type]
        await s.subscribe(mid, second_plain, durable="stage2", **manual)  # type: ignore[arg-type]
    print("ready", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
