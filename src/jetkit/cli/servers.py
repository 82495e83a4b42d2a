"""Commands that run something until Ctrl+C: ``demo``, ``server``, ``cluster``, ``ui``;
and ``examples``, which lists what else can be run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

import jetkit as jk

from .._cluster import CLUSTER_FILE, MAX_NODES, LocalCluster
from .._tools import DEFAULT_STORE, Target
from ..examples import EXAMPLES, orders
from . import output
from .common import (
    DEFAULT_TARGET,
    connected,
    positive,
    quiet_when_the_reader_goes,
    run,
    stop_on_signals,
)

DEMO = orders.Options()  # the demo's options and their defaults live with the demo


def demo(
    store_dir: Annotated[str, typer.Option(help="Where the demo keeps its data.")] = DEMO.store_dir,
    duration: Annotated[
        float | None,
        typer.Option(help="Stop by itself after this many seconds (default: run until Ctrl+C)."),
    ] = DEMO.duration,
    order_interval: Annotated[
        float, typer.Option(help="Seconds between orders.")
    ] = DEMO.order_interval,
    user_interval: Annotated[
        float, typer.Option(help="Seconds between registrations.")
    ] = DEMO.user_interval,
    fail_rate: Annotated[
        float, typer.Option(help="Chance (0..1) that processing an order fails.")
    ] = DEMO.fail_rate,
    analytics_delay: Annotated[
        float, typer.Option(help="Seconds before the analytics service starts.")
    ] = DEMO.analytics_delay,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve Prometheus metrics on this port (0: a free one)."
        ),
    ] = None,
) -> None:
    """Run the order-processing example: five services and scheduled follow-ups."""
    if not 0.0 <= fail_rate <= 1.0:
        raise typer.BadParameter(f"{fail_rate:g} is not between 0 and 1", param_hint="--fail-rate")
    positive(duration, "--duration", hint=" (leave it out to run until Ctrl+C)")
    positive(order_interval, "--order-interval")
    positive(user_interval, "--user-interval")
    positive(analytics_delay, "--analytics-delay", allow_zero=True)
    options = orders.Options(
        store_dir=store_dir,
        duration=duration,
        order_interval=order_interval,
        user_interval=user_interval,
        fail_rate=fail_rate,
        analytics_delay=analytics_delay,
        metrics_port=metrics_port,
    )
    raise typer.Exit(run(lambda: orders.main(options)))


def server(
    store_dir: Annotated[
        Path, typer.Option("--store-dir", help="Store to serve (created if missing).")
    ] = DEFAULT_STORE,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (default or 0: a free one).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve Prometheus metrics on this port (0: a free one)."
        ),
    ] = None,
) -> None:
    """Run the embedded server in the foreground until Ctrl+C."""

    async def work() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        async with jk.Stream.open(
            store_dir=store_dir, port=port or None, metrics_port=metrics_port
        ) as s:
            if not s.embedded:
                raise jk.ConfigError(f"{s.store_dir} is already served at {s.server_url}")
            output.write(f"nats-server running at {s.server_url}")
            if s.metrics_url is not None:
                output.write(f"metrics at {s.metrics_url}")
            output.write(
                f"store: {output.escape(str(s.store_dir))}  (credentials in "
                "jetkit-credentials.json)"
            )
            output.write("other jetkit processes using this store attach to it. Ctrl+C stops it.")
            await stop.wait()
        output.write("stopped")

    run(work)


def cluster(
    nodes: Annotated[int, typer.Option(help="How many nats-servers (1 to 9).")] = 3,
    store_dir: Annotated[
        Path,
        typer.Option(
            "--store-dir",
            help="The cluster's directory: one store per node; jetkit-cluster.json is "
            "written there once the cluster answers.",
        ),
    ] = Path("./jetstream-cluster"),
) -> None:
    """Run a local NATS cluster in the foreground until Ctrl+C (loopback, routes,
    JetStream on every node); a node that dies is started again."""
    if not 1 <= nodes <= MAX_NODES:
        raise typer.BadParameter(f"{nodes} is not between 1 and {MAX_NODES}", param_hint="--nodes")

    async def work() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        local = LocalCluster(nodes, store_dir)
        await local.start()
        try:
            assert local.store_dir is not None
            info = local.store_dir / CLUSTER_FILE
            output.write(f"NATS cluster of {nodes} node(s) running, JetStream on every node")
            for node in local.nodes:
                output.write(f"  {node.name}  {node.url}  (store {output.escape(str(node.store))})")
            output.write(f"urls, user and password: {output.escape(str(info))}")
            output.write(
                "connect: jk.Stream.open(servers=[...], user=..., password=...) with the "
                "values in that file (api_timeout=20 and publish_timeout=20 ride through "
                "elections); jetkit commands: --cluster DIR or JETKIT_CLUSTER=DIR. Ctrl+C "
                "stops the cluster."
            )
            await local.run_until(stop)
        finally:
            await local.stop()
        output.write("stopped")

    run(work)


@connected
def ui(
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0: a free one).")
    ] = 0,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Do not open a browser; only print the URL.")
    ] = False,
    target: Target = DEFAULT_TARGET,
) -> None:
    """A local web console: topics, consumers with lag, dead letters (re-drive), publish.
    Prints its URL (with a token); Ctrl+C stops."""
    try:  # (only this command loads the console, and it needs the ui extra)
        from .. import ui as console
    except ImportError as exc:
        output.error(
            f"jetkit ui needs the ui extra ({exc.name or 'starlette'} is missing): "
            'pip install "jetkit[ui]"'
        )
        raise typer.Exit(2) from None
    run(lambda: console.serve(target, port=port, open_browser=not no_open, write=output.write))


def examples() -> None:
    """List the runnable examples, what each shows and how to run it."""
    width = max(len(name) for name, _, _ in EXAMPLES)
    with quiet_when_the_reader_goes():
        for name, what, command in EXAMPLES:
            output.write(f"{name:<{width}}  {what}")
            output.write(f"{'':<{width}}  run: {command} [--duration SECONDS]")
