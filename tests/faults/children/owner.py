"""Owns a store and publishes m<START>..m<START+COUNT-1> with msg_id, one line per ack.

Usage: owner.py STORE TOPIC START COUNT. The test SIGKILLs it at some point.
"""

import asyncio
import sys

import jetkit as jk


async def main(store: str, topic: str, start: int, count: int) -> None:
    async with jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM) as s:
        print(f"open {s.embedded}", flush=True)
        for i in range(start, start + count):
            ack = await s.publish(topic, f"m{i}".encode(), msg_id=f"m{i}")
            assert ack is not None
            print(f"acked {i} {ack.seq} {ack.duplicate}", flush=True)
        print("finished", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
