"""What the tools show, without a server: jetkit top's helpers, the command line's column
fitting, what the CLI and the console share (jetkit._tools), the console's payload view
and lag chart. (The tools themselves: tests/tools/.)"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

import jetkit as jk
from jetkit import _tools, _top
from jetkit.cli.output import Column, fit
from jetkit.ui import _view


def test_top_draws_sparklines_wraps_names_at_separators_and_shortens_figures() -> None:
    assert _top.sparkline([]) == ""
    assert _top.sparkline([0, 0]) == "▁▁"
    assert _top.sparkline([1, 2, 4, 8]) == "▂▃▅█"
    assert _top.wrap_name("orders.events.eu", 8) == "orders.\nevents.\neu"
    assert _top.wrap_name("abcdefghijkl", 5) == "abcde\nfghij\nkl"  # one token: folded
    assert _top.count(999) == "999" and _top.count(12_345) == "12k"
    assert _top.size(3 * 2**20) == "3.0 MiB"
    assert _top.share(20, [5, 30]) == [5, 15]


def test_fit_shrinks_text_before_numbers_and_names() -> None:
    columns = [Column("topic"), Column("messages", "number"), Column("data", "clip")]
    cells = [["a.long.topic.name", "12", "y" * 100]]
    widths, excess = fit(columns, cells, 60, names=False)
    assert widths[:2] == [17, 8] and excess == 0 and sum(widths) + 4 == 60
    widths, excess = fit(columns, cells, 30, names=False)
    assert widths[:2] == [17, 8] and excess > 0  # the data column cannot give more
    widths, _ = fit(columns, cells, 30, names=True)
    assert sum(widths) + 4 <= 30


def test_what_the_cli_shares_with_the_console_needs_neither() -> None:
    # jetkit._tools: headers as typed, the publish sentence, where to connect
    assert _tools.parse_headers(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    for bad in ("no-equals-sign", "=value"):
        with pytest.raises(_tools.BadInput, match="is not KEY=VALUE"):
            _tools.parse_headers([bad])
    stored = jk.PubAck("orders_events", 3, duplicate=True)
    assert _tools.published("orders.events", stored) == (
        "stored in orders_events at seq 3 (duplicate: not stored again)"
    )
    assert _tools.published("orders.events", None, core_hint="; --stored stores it") == (
        "published to orders.events (core topic: not stored, only live subscribers get it; "
        "--stored stores it)"
    )
    assert _tools.escape("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    with pytest.raises(jk.ConfigError, match=r"no jetkit store at \./nowhere"):
        _tools.Target(store_dir=Path("nowhere")).open()


def test_where_a_tool_connects_comes_from_its_options_then_the_environment(
    tmp_path: Path,
) -> None:
    resolve = _tools.resolve
    assert resolve(env={}) == _tools.Where(store_dir=Path("jetstream-store"))
    assert resolve(env={"JETKIT_STORE": "/s"}) == _tools.Where(store_dir=Path("/s"))
    assert resolve(Path("here"), env={"JETKIT_STORE": "/s"}).store_dir == Path("here")
    assert resolve(servers=["nats://a:1", "nats://b:2"]).servers == ("nats://a:1", "nats://b:2")
    with pytest.raises(jk.ConfigError, match=r"--server or --store-dir, not both"):
        resolve(Path("s"), ["nats://a:1"])
    with pytest.raises(jk.ConfigError, match=r"both \$JETKIT_CLUSTER and \$JETKIT_STORE"):
        resolve(env={"JETKIT_STORE": "/s", "JETKIT_CLUSTER": "/c"})
    # a cluster's directory, as --cluster, as the store or from the environment
    (tmp_path / "jetkit-cluster.json").write_text(
        '{"urls": ["nats://127.0.0.1:1"], "user": "u", "password": "p", '
        f'"nodes": [{{"name": "n1", "pid": {os.getpid()}}}]}}'
    )
    found = _tools.Where(servers=("nats://127.0.0.1:1",), user="u", password="p", cluster=tmp_path)
    assert resolve(cluster=tmp_path) == found
    assert resolve(tmp_path) == found
    assert resolve(env={"JETKIT_CLUSTER": str(tmp_path)}) == found
    file = tmp_path / "jetkit-cluster.json"
    assert resolve(cluster=file) == dataclasses.replace(found, cluster=file)
    with pytest.raises(jk.ConfigError, match=r"no running cluster at .*jetkit cluster --store-dir"):
        resolve(cluster=tmp_path / "elsewhere")


def test_payloads_are_made_readable() -> None:
    assert _view.payload(b"") == _view.Payload("", "empty", 0, False)
    assert _view.payload(b'{"a":1}') == _view.Payload('{\n  "a": 1\n}', "json", 7, False)
    assert _view.payload("héllo".encode()) == _view.Payload("héllo", "text", 6, False)
    assert _view.payload(b"\xff<") == _view.Payload("\\xff<", "binary", 2, False)
    assert _view.payload(b"abcdef", limit=4) == _view.Payload("abcd", "text", 6, True)
    # control bytes are UTF-8, but a page shows NUL as nothing: written as escapes
    assert _view.payload(b"a\x00\x1b[31m\tb\r\n") == _view.Payload(
        "a\\x00\\x1b[31m\tb\r\n", "binary", 11, False
    )
    assert _view.payload(b"\xff\x00") == _view.Payload("\\xff\\x00", "binary", 2, False)
    assert _view.payload(b'"\\u0000"').kind == "json"  # JSON shows its escapes itself


def test_the_lag_chart_spans_the_window() -> None:
    chart = _view.chart([("a", [(0.0, 5), (50.0, 10), (100.0, 0)]), ("gone", [])], 100.0, 100.0)
    assert chart.top == 10
    [line] = chart.lines
    assert (line.name, line.last, line.points) == ("a", 0, "0.0,90.0 320.0,0.0 640.0,180.0")
    assert _view.chart([("a", [(0.0, 3)])], 1000.0, 100.0).lines == []  # all too old
