"""Commands that run a service: ``run`` (a ``jk.App`` in supervised worker processes)."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

import jetkit as jk

from .. import _runner
from .._app import load_app
from .._tools import CLUSTER_ENV, STORE_ENV, resolve
from . import output
from .common import run as run_work


def run(
    app: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:APP",
            help="The jk.App to run, e.g. service:app (imported from the current directory).",
            show_default=False,
        ),
    ],
    workers: Annotated[
        int, typer.Option(min=1, max=1024, help="Worker processes (one store or cluster).")
    ] = 1,
    store_dir: Annotated[
        Path | None,
        typer.Option("--store-dir", help="Store of the embedded server, instead of the App's."),
    ] = None,
    server: Annotated[
        list[str] | None,
        typer.Option(
            "--server", help="URL of an external NATS instead of a store (repeat for a cluster)."
        ),
    ] = None,
    cluster: Annotated[
        Path | None,
        typer.Option(
            "--cluster",
            help="A local cluster (jetkit cluster): its directory or its jetkit-cluster.json. "
            "Without --store-dir, --server or --cluster: $JETKIT_CLUSTER or $JETKIT_STORE, "
            "else the App's own options.",
            show_default=False,
        ),
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="Serve /healthz and /readyz on this port (0: a free one)."
        ),
    ] = None,
    health_host: Annotated[str, typer.Option(help="Where the probes are served.")] = "127.0.0.1",
    reload: Annotated[
        bool, typer.Option("--reload", help="Restart the workers when a .py file here changes.")
    ] = False,
) -> None:
    """Run a jk.App in worker processes, restarted if they die; SIGTERM stops them gracefully."""
    if reload and importlib.util.find_spec("watchfiles") is None:
        output.error("--reload needs watchfiles: pip install 'jetkit[reload]'")
        raise typer.Exit(2)
    cwd = Path.cwd()
    if str(cwd) not in sys.path:
        sys.path.insert(0, str(cwd))  # MODULE is imported from here, as the workers do
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s jetkit run [%(process)d] %(levelname)s: %(message)s",
    )
    try:
        where = None
        if store_dir or server or cluster or os.environ.get(CLUSTER_ENV, os.environ.get(STORE_ENV)):
            where = resolve(store_dir, server or (), cluster)
        the_app = load_app(app)
        plan = _runner.plan(
            the_app,
            app,
            workers,
            store_dir=where.store_dir if where else None,
            servers=where.servers if where else (),
            credentials=(where.user, where.password) if where and where.user else None,
            health=(health_host, health_port) if health_port is not None else None,
            reload=reload,
            cwd=cwd,
        )
    except jk.JetkitError as exc:
        output.error(str(exc))
        raise typer.Exit(2) from None
    log = logging.getLogger("jetkit.run")
    raise typer.Exit(run_work(lambda: _runner.Supervisor(plan, log).run()))
