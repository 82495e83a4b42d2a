"""The same code on a 3-node NATS cluster (``jetkit.testing.local_cluster``), proven by
killing the stream's leader while publishing and while consuming, and by taking two of
three nodes down.

Every publish here carries a ``msg_id`` and is retried until acknowledged, as a
producer that must not lose data does; "acked" is the set of ids the cluster
confirmed, and each test checks that every acked id is stored and delivered. The
figures (failover time, publish errors during failover) go to the terminal summary.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

import jetkit as jk
from conftest import CLUSTER_FIGURES, wait_until, wait_until_async
from jetkit.testing import LocalCluster, local_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(240)]

T = TypeVar("T")


@pytest.fixture(scope="module")
async def cluster() -> AsyncIterator[LocalCluster]:
    async with local_cluster(3) as running:
        yield running


async def connect(cluster: LocalCluster, **options: object) -> jk.Stream:
    return await jk.Stream.open(
        servers=cluster.urls,
        user=cluster.user,
        password=cluster.password,
        default_mode=jk.TopicMode.JETSTREAM,
        **options,  # type: ignore[arg-type]
    )


async def all_up(cluster: LocalCluster) -> None:
    """Every node running, and the cluster's JetStream answering."""
    for node in cluster.nodes:
        if not node.running:
            await cluster.start_node(node.name)
    await cluster.wait_ready()


async def all_current(s: jk.Stream, topic: str) -> bool:
    try:
        info = await s.topic_info(topic)
    except jk.JetkitError:
        return False
    states = info.replica_states
    return len(states) == 3 and all(r.current and not r.offline for r in states)


class Producer:
    """Publishes ids 0.. with msg_id, each retried until acknowledged (bounded)."""

    def __init__(self, s: jk.Stream, topic: str) -> None:
        self.s = s
        self.topic = topic
        self.acked: set[int] = set()
        self.errors: list[str] = []
        self.ack_times: list[float] = []

    async def run(self, count: int, deadline: float) -> None:
        for i in range(count):
            while True:
                assert time.monotonic() < deadline, f"publish {i} never acknowledged"
                try:
                    await self.s.publish(self.topic, str(i).encode(), msg_id=f"m-{i}")
                except jk.JetkitError as exc:
                    self.errors.append(type(exc).__name__)
                    continue
                self.acked.add(i)
                self.ack_times.append(time.monotonic())
                break


async def settled(call: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
    """``call()`` retried while the cluster elects leaders (its API may not answer)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except jk.TimeoutError:
            assert time.monotonic() < deadline, "the cluster never answered again"


def longest_gap(times: list[float], since: float) -> float:
    """The longest pause between two successive events from ``since`` on."""
    return max((b - a for a, b in itertools.pairwise(times) if a >= since), default=0.0)


async def stored_ids(s: jk.Stream, topic: str, durable: str, expected: int) -> list[int]:
    seen: list[int] = []

    async def handler(data: bytes) -> None:
        seen.append(int(data))

    sub = await settled(
        lambda: s.subscribe(topic, handler, durable=durable, start_at=jk.StartAt.ALL)
    )
    await wait_until(lambda: len(seen) >= expected, timeout=60)
    await sub.stop()
    return seen


async def test_replicated_topic_reports_its_leader_and_replicas(cluster: LocalCluster) -> None:
    s = await connect(cluster)
    try:
        info = await s.declare_topic("cl.info", replicas=3)
        assert info is not None and info.replicas == 3
        assert info.leader in {n.name for n in cluster.nodes}
        assert sorted(info.replica_nodes) == ["n1", "n2", "n3"]
        await wait_until_async(lambda: all_current(s, "cl.info"))
        await s.publish("cl.info", b"x")

        async def ignore(data: bytes) -> None:
            pass

        await s.subscribe("cl.info", ignore, durable="d", start_at=jk.StartAt.ALL)
        consumer = await s.consumer_info("cl.info", "d")
        assert consumer.durable and consumer.stream == info.name
        # more replicas than nodes: refused at once, saying how many nodes there are
        with pytest.raises(jk.ConfigError, match=r"replicas=5 .* 3 JetStream node.*replicas=3"):
            await s.declare_topic("cl.too.many", replicas=5)
    finally:
        await s.close()


async def test_kill_the_leader_while_publishing(cluster: LocalCluster) -> None:
    await all_up(cluster)
    topic = "cl.publish"
    s = await connect(cluster, publish_timeout=3)
    try:
        await s.declare_topic(topic, replicas=3)
        await wait_until_async(lambda: all_current(s, topic))
        leader = (await s.topic_info(topic)).leader
        assert leader is not None
        producer = Producer(s, topic)
        total = 3000
        run = asyncio.ensure_future(producer.run(total, time.monotonic() + 120))
        await wait_until(lambda: len(producer.acked) >= 500 or run.done(), timeout=60)
        killed_at = time.monotonic()
        await cluster.kill(leader, restart=False)  # kill -9; it stays down for now
        await asyncio.wait_for(run, 150)
        # the longest wait between two acks from a second before the kill on
        failover = longest_gap(producer.ack_times, killed_at - 1)

        new_leader = (await settled(lambda: s.topic_info(topic))).leader
        assert new_leader is not None and new_leader != leader
        assert producer.acked == set(range(total))
        ids = await stored_ids(s, topic, "after-publish-kill", total)
        assert sorted(ids) == list(range(total))  # all acked, none stored twice

        # the killed node comes back and catches up
        await cluster.start_node(leader)
        await wait_until_async(lambda: all_current(s, topic), timeout=60)
        CLUSTER_FIGURES.append(
            {
                "scenario": "kill -9 the leader while publishing (msg_id, retried)",
                "acked": len(producer.acked),
                "stored": len(ids),
                "lost": total - len(set(ids)),
                "publish_errors": len(producer.errors),
                "failover_s": round(failover, 2),
                "note": f"leader {leader} -> {new_leader}",
            }
        )
    finally:
        await s.close()


async def test_kill_the_leaders_while_consuming(cluster: LocalCluster) -> None:
    """The stream's leader first, then the consumer's own leader (often another node)."""
    await all_up(cluster)
    topic = "cl.consume"
    s = await connect(cluster)
    try:
        await s.declare_topic(topic, replicas=3)
        total = 8000
        await s.publish_many(topic, [str(i).encode() for i in range(total)])
        await wait_until_async(lambda: all_current(s, topic))
        seen: list[int] = []
        times: list[float] = []

        async def handler(data: bytes) -> None:
            seen.append(int(data))
            times.append(time.monotonic())
            await asyncio.sleep(0.001)  # slow enough to be consuming when a leader dies

        await s.subscribe(
            topic, handler, durable="survivor", ack=jk.AckPolicy.MANUAL, start_at=jk.StartAt.ALL
        )
        await wait_until(lambda: len(seen) >= 1000, timeout=60)
        for role, at in (("stream", 1000), ("consumer", 4000)):
            await wait_until(lambda at=at: len(seen) >= at, timeout=120)
            if role == "stream":
                leader = (await settled(lambda: s.topic_info(topic))).leader
            else:
                await all_up(cluster)
                leader = (await settled(lambda: s.consumer_info(topic, "survivor"))).leader
            assert leader is not None
            killed_at = time.monotonic()
            await cluster.kill(leader, restart=False)
            await wait_until(lambda at=at: len(seen) >= at + 1000, timeout=120)
            CLUSTER_FIGURES.append(
                {
                    "scenario": f"kill -9 the {role}'s leader while consuming (MANUAL ack)",
                    "failover_s": round(longest_gap(times, killed_at - 1), 2),
                    "note": f"{leader} killed",
                }
            )
        await wait_until(lambda: len(set(seen)) >= total, timeout=120)
        assert set(seen) == set(range(total))
        # the consumer goes on: a sentinel published now reaches it
        await settled(lambda: s.publish(topic, str(total).encode()))
        await wait_until(lambda: total in seen, timeout=60)
        CLUSTER_FIGURES.append(
            {
                "scenario": "  ... both kills: every stored message delivered",
                "acked": total,
                "stored": total,
                "lost": total - len(set(seen) & set(range(total))),
                "publish_errors": 0,
                "note": f"delivered again: {len(seen) - len(set(seen))}",
            }
        )
    finally:
        await s.close()
        await all_up(cluster)


async def test_two_of_three_down_publishes_fail_clearly_then_work_again(
    cluster: LocalCluster,
) -> None:
    await all_up(cluster)
    topic = "cl.quorum"
    s = await connect(cluster, publish_timeout=2)
    try:
        await s.declare_topic(topic, replicas=3)
        await wait_until_async(lambda: all_current(s, topic))
        await s.publish(topic, b"before")
        await s.publish(topic, b"held", deliver_after=3600)  # schedules switched on
        names = [n.name for n in cluster.nodes]
        await cluster.stop_node(names[1])
        await cluster.stop_node(names[2])
        started = time.monotonic()
        with pytest.raises(jk.TimeoutError, match=r"publish_timeout|may or may not"):
            await s.publish(topic, b"no quorum", msg_id="q-1")
        waited = time.monotonic() - started
        # a scheduled publish first reads the stream's limits again (the API call times out)
        with pytest.raises(jk.TimeoutError, match=r"publish_timeout|may or may not|no answer"):
            await s.publish(topic, b"held, no quorum", deliver_after=3600, msg_id="h-1")

        await cluster.start_node(names[1])  # a majority again
        deadline = time.monotonic() + 60
        while True:  # the producer's retry, as in Producer.run
            try:
                ack = await s.publish(topic, b"no quorum", msg_id="q-1")
                break
            except jk.JetkitError:
                assert time.monotonic() < deadline, "publishes never worked again"
        assert ack is not None
        while True:
            try:
                held = await s.publish(topic, b"held, no quorum", deliver_after=3600, msg_id="h-1")
                break
            except jk.JetkitError:
                assert time.monotonic() < deadline, "scheduled publishes never worked again"
        assert await s.cancel_scheduled(held)
        CLUSTER_FIGURES.append(
            {
                "scenario": "2 of 3 nodes down: publish (publish_timeout=2)",
                "acked": 1,
                "stored": 1,
                "lost": 0,
                "publish_errors": 1,
                "failover_s": "-",
                "note": f"failed after {waited:.1f}s with jk.TimeoutError; worked again "
                "once a second node returned",
            }
        )
    finally:
        await s.close()
        await all_up(cluster)


async def test_jetkit_cluster_command(tmp_path: Path) -> None:
    """`jetkit cluster` as a user runs it: a foreground process, stopped with Ctrl+C. A
    script that waits for its file and declares a replicated topic at once works: the
    file is written only once the cluster answers."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jetkit",
        "cluster",
        "--nodes",
        "3",
        "--store-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    cluster_file = tmp_path / "jetkit-cluster.json"
    try:
        await wait_until(lambda: cluster_file.exists() or proc.returncode is not None, 60)
        info = json.loads(cluster_file.read_text())
        async with jk.Stream.open(
            servers=info["urls"], user=info["user"], password=info["password"]
        ) as s:
            declared = await s.declare_topic("cli.cluster", replicas=3)
            assert declared is not None and sorted(declared.replica_nodes) == ["n1", "n2", "n3"]
            ack = await s.publish("cli.cluster", b"stored three times")
            assert ack is not None and ack.seq == 1
        assert oct(cluster_file.stat().st_mode & 0o777) == "0o600"
        # a second one on the same directory is refused, and leaves the first one's file
        second = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "jetkit", "cluster", "--store-dir", str(tmp_path)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2 and b"already running" in second.stderr
        assert json.loads(cluster_file.read_text()) == info
        assert [n["name"] for n in info["nodes"]] == ["n1", "n2", "n3"]
        assert all(isinstance(n["pid"], int) for n in info["nodes"])
        assert proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(60):
            while not any("Ctrl+C stops the cluster" in line for line in lines):
                raw = await proc.stdout.readline()
                assert raw, "jetkit cluster exited early:\n" + "".join(lines)
                lines.append(raw.decode())
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert not cluster_file.exists()  # no cluster here now
    ports = json.loads((tmp_path / "jetkit-cluster-ports.json").read_text())
    assert [n["url"] for n in ports] == info["urls"]  # kept for the next start
    for node in info["nodes"]:
        with pytest.raises(ProcessLookupError):
            os.kill(node["pid"], 0)


async def test_the_client_moves_to_another_node_when_its_node_dies(
    cluster: LocalCluster,
) -> None:
    """Connected through one node's URL only: the others are learned from the cluster,
    and the Stream reconnects to one of them when its node dies."""
    await all_up(cluster)
    first = cluster.nodes[0]
    s = await jk.Stream.open(
        servers=[first.url],
        user=cluster.user,
        password=cluster.password,
        default_mode=jk.TopicMode.JETSTREAM,
    )
    try:
        await s.declare_topic("cl.move", replicas=3)
        assert s.server_url == first.url
        await cluster.kill(first.name, restart=False)
        await wait_until(lambda: s.connected and s.server_url != first.url, timeout=60)
        assert s.server_url in cluster.urls
        ack = await settled(lambda: s.publish("cl.move", b"after the move", msg_id="mv-1"))
        assert ack is not None
    finally:
        await s.close()
        await all_up(cluster)


async def test_calls_made_as_the_stream_leader_dies_succeed_in_three_elections(
    cluster: LocalCluster,
) -> None:
    """With api_timeout and publish_timeout at 20 s, every kind of call made at the
    instant the stream's leader is killed (-9) waits for the election and succeeds,
    three elections in a row; no caller retries."""
    await all_up(cluster)
    topic, dlq = "cl.elect", "cl.elect.dlq"
    s = await connect(cluster, api_timeout=20, publish_timeout=20)
    try:
        await s.declare_topic(topic, replicas=3)

        async def poison(data: bytes) -> None:
            if data == b"poison":
                raise ValueError("poison")

        await s.subscribe(
            topic, poison, durable="el", ack=jk.AckPolicy.MANUAL, max_deliver=1, dlq=dlq
        )
        assert (await s.topic_info(dlq)).replicas == 3  # the DLQ is replicated like its topic
        got: list[bytes] = []

        async def collect(data: bytes) -> None:
            got.append(data)

        async def calls(round_: int) -> list[object]:
            return await asyncio.gather(
                s.topic_info(topic),
                s.consumer_info(topic, "el"),
                s.subscribe(topic, collect, durable=f"el-{round_}", start_at=jk.StartAt.ALL),
                s.publish(topic, f"plain {round_}".encode()),
                s.publish(topic, f"keyed {round_}".encode(), msg_id=f"k-{round_}"),
                s.publish_many(topic, [f"many {round_}".encode()]),
                s.dead_letters(dlq),
                s.redrive(dlq),
                s.cancel_scheduled(topic, msg_id=f"held-{round_}"),
                s.declare_topic(f"cl.elect.new{round_}", replicas=3),
            )

        for round_ in range(3):
            await wait_until_async(lambda: all_current(s, topic), timeout=60)
            await s.publish(topic, b"poison")  # a dead letter for dead_letters and redrive
            await wait_until_async(lambda: _has_letters(s, dlq), timeout=60)
            await s.publish(topic, b"later", deliver_after=3600, msg_id=f"held-{round_}")
            leader = (await s.topic_info(topic)).leader
            assert leader is not None
            started = time.monotonic()
            await cluster.kill(leader, restart=False)
            results = await calls(round_)
            took = time.monotonic() - started
            info, consumer, _, plain, keyed, many, letters, redriven, cancelled, new = results
            assert isinstance(info, jk.TopicInfo) and isinstance(consumer, jk.ConsumerInfo)
            assert isinstance(plain, jk.PubAck) and not plain.duplicate
            assert isinstance(keyed, jk.PubAck) and isinstance(many, list)
            assert isinstance(letters, list) and isinstance(redriven, jk.RedriveResult)
            assert cancelled is True and new is not None
            # the new subscription is live: this round's messages reach it
            mine = {f"plain {round_}".encode(), f"keyed {round_}".encode()}
            await wait_until(lambda mine=mine: mine <= set(got), timeout=60)
            new_leader = (await s.topic_info(topic)).leader
            assert new_leader not in (None, leader)
            CLUSTER_FIGURES.append(
                {
                    "scenario": f"election {round_ + 1}: 10 calls made as the leader died",
                    "publish_errors": 0,
                    "failover_s": round(took, 2),
                    "note": f"{leader} -> {new_leader}; every call succeeded",
                }
            )
            await cluster.start_node(leader)
        # each message once, though publishes were sent again through the elections
        stored = await stored_ids_raw(s, topic)
        assert len(stored) == len(set(stored))
    finally:
        await s.close()
        await all_up(cluster)


async def _has_letters(s: jk.Stream, dlq: str) -> bool:
    try:
        return bool(await s.dead_letters(dlq))
    except jk.JetkitError:
        return False


async def stored_ids_raw(s: jk.Stream, topic: str) -> list[bytes]:
    """Every payload stored on ``topic`` but the poison and held ones, read up to a
    sentinel published now."""
    await s.publish(topic, b"end")
    seen: list[bytes] = []

    async def handler(data: bytes) -> None:
        seen.append(data)

    sub = await s.subscribe(topic, handler, start_at=jk.StartAt.ALL)
    await wait_until(lambda: b"end" in seen, timeout=60)
    await sub.stop()
    return [data for data in seen if data not in (b"poison", b"later", b"end")]


async def test_the_cli_finds_the_cluster_by_its_directory(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """--cluster DIR, the cluster's directory as --store-dir, $JETKIT_CLUSTER and several
    --server URLs all reach the cluster; none starts a server in its directory."""
    assert cluster.store_dir is not None
    await all_up(cluster)
    s = await connect(cluster)
    try:
        await s.declare_topic("cl.cli", replicas=3)
    finally:
        await s.close()
    home = cluster.store_dir
    before = sorted(p.name for p in home.iterdir())

    async def topics(*args: str | Path, **env: str) -> set[str]:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "jetkit", "topics", *map(str, args)],
            capture_output=True,
            cwd=tmp_path,  # another directory: no ./jetstream-store here
            env={k: v for k, v in os.environ.items() if not k.startswith("JETKIT_")} | env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        return {line.split("\t")[0] for line in result.stdout.decode().splitlines()}

    listed = await topics("--cluster", home)
    assert "cl.cli" in listed
    assert await topics("--cluster", home / "jetkit-cluster.json") == listed
    assert await topics("--store-dir", home) == listed
    assert await topics(JETKIT_CLUSTER=str(home)) == listed
    urls = [a for url in cluster.urls for a in ("--server", url)]
    assert await topics(*urls, "--user", cluster.user, "--password", cluster.password) == listed
    assert sorted(p.name for p in home.iterdir()) == before  # no store made there
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "jetkit", "server", "--store-dir", str(home)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2 and b"directory of a local cluster" in refused.stderr
    assert sorted(p.name for p in home.iterdir()) == before
