"""A durable consumer in its own process: one line when it gets a message, one once the
server confirmed its ack. Usage: consumer.py STORE TOPIC DURABLE ACK_WAIT. The test
SIGKILLs or SIGSTOPs it.
"""

import asyncio
import sys

import jetkit as jk


async def main(store: str, topic: str, durable: str, ack_wait: float) -> None:
    s = await jk.Stream.open(store_dir=store, default_mode=jk.TopicMode.JETSTREAM)

    async def handler(msg: jk.Message) -> None:
        print(f"got {msg.data.decode()} {msg.num_delivered}", flush=True)
        await msg.ack(wait=True)
        print(f"acked {msg.data.decode()}", flush=True)

    await s.subscribe(
        topic,
        handler,
        durable=durable,
        ack=jk.AckPolicy.MANUAL,
        start_at=jk.StartAt.ALL,
        ack_wait=ack_wait,
        buffer_size=64,
    )
    print("ready", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
