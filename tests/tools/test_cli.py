"""The command line as people and scripts run it: ``python -m jetkit ...`` as a child
process, its stdout a pipe (or a pseudo-terminal), against a real store. (Refused
arguments: test_bad_input_cli.py; helpers and stores: conftest.py.)"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from rich.cells import cell_len

import jetkit as jk
from conftest import ROOT, free_port, stop_process

from .conftest import HOSTILE, LETTERS, LONG_ERROR, fill, fill_letters, jetkit, ok, tsv

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_terminal(*args: str | Path, columns: int = 80, timeout: float = 60) -> str:
    """Run ``python -m jetkit ARGS`` with stdout a pseudo-terminal ``columns`` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jetkit", *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            assert ready, f"jetkit {args} printed nothing for {timeout}s"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    return ANSI.sub("", b"".join(chunks).decode().replace("\r\n", "\n"))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    fill(tmp_path)
    return tmp_path


# -- pipes --------------------------------------------------------------------------------


def test_tables_in_a_pipe_are_tab_separated_and_whole(filled: Path) -> None:
    topics = {row["topic"]: row for row in tsv(ok("topics", "--store-dir", filled))}
    assert set(topics) == {
        "orders.events",
        "failed.orders",
        "hostile.events",
        "failed.hostile.events",
    }
    assert topics["orders.events"]["stream"] == "orders_events"
    assert topics["orders.events"]["messages"] == "2"
    assert topics["orders.events"]["last_message"].endswith("+00:00")  # ISO 8601
    fields = {
        row["field"]: row["value"]
        for row in tsv(ok("topic", "orders.events", "--store-dir", filled))
    }
    assert fields["last_seq"] == "2" and fields["name"] == "orders_events"
    consumers = tsv(ok("consumers", "orders.events", "--store-dir", filled))
    assert [c["consumer"] for c in consumers] == ["proc"] and consumers[0]["durable"] == "yes"


def test_dlq_in_a_pipe_prints_hostile_payloads_as_text_uncut(filled: Path) -> None:
    result = jetkit("dlq", "failed.hostile.events", "--store-dir", filled)
    assert result.returncode == 0, result.stderr
    rows = tsv(result.stdout.decode())
    assert [row["data"] for row in rows] == [
        "[/red]",
        "[link=http://x]click[/link]",
        "\\x1b[31mred\\x1b[0m",
        "x" * 5000,
        "\\xff\\xfe not utf-8",
        "two\\r\\nlines\\tand a tab",
    ]
    assert {row["consumer"] for row in rows} == {"hostile-processor-with-a-long-name"}
    assert b"\x1b" not in result.stdout
    # the count goes to stderr: stdout holds only the table
    assert result.stderr.decode() == "6 dead letter(s) in failed.hostile.events\n"
    letters = tsv(ok("dlq", "failed.orders", "--store-dir", filled))
    assert letters[0]["error"] == "RuntimeError: boom [/red]"


def test_sub_prints_hostile_payloads_one_line_each(filled: Path) -> None:
    out = ok("sub", "hostile.events", "--from-start", "--count", "6", "--store-dir", filled)
    assert out.splitlines() == [
        "#1 hostile.events [/red]",
        "#2 hostile.events [link=http://x]click[/link]",
        "#3 hostile.events \\x1b[31mred\\x1b[0m",
        "#4 hostile.events " + "x" * 5000,
        "#5 hostile.events \\xff\\xfe not utf-8",
        "#6 hostile.events two\\r\\nlines\\tand a tab",
    ]
    out = ok(
        "sub", "hostile.events", "--from-start", "--count", "1", "--headers", "--store-dir", filled
    )
    assert out == "#1 hostile.events [h=[/red]] [/red]\n"


def test_sub_json_is_one_object_per_line_and_lossless(filled: Path) -> None:
    out = ok(
        "sub", "hostile.events", "--from-start", "--count", "6", "--json", "--store-dir", filled
    )
    lines = out.splitlines()
    assert len(lines) == 6
    records = [json.loads(line) for line in lines]
    for n, (record, sent) in enumerate(zip(records, HOSTILE, strict=True), 1):
        assert record["topic"] == "hostile.events" and record["seq"] == n
        assert record["headers"] == {"h": "[/red]"}
        assert record["timestamp"].endswith("+00:00")
        if "data" in record:
            assert record["data"].encode() == sent and "data_b64" not in record
        else:
            assert base64.b64decode(record["data_b64"]) == sent == b"\xff\xfe not utf-8"


def test_pub_reads_stdin_and_files(tmp_path: Path) -> None:
    store = tmp_path / "store"
    binary = b"\x00\xff binary\r\n[/red]\n"
    asyncio.run(_declare(store, "in.events"))  # stored, so sub can read it back
    assert ok("pub", "in.events", "-", "--store-dir", store, stdin=binary) == (
        "stored in in_events at seq 1\n"
    )
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"from a file")
    ok("pub", "in.events", "--file", payload, "--store-dir", store)
    ok("pub", "in.events", "", "--store-dir", store)  # an empty payload is a payload
    out = ok("sub", "in.events", "--from-start", "--count", "3", "--json", "--store-dir", store)
    first, second, third = (json.loads(line) for line in out.splitlines())
    assert base64.b64decode(first["data_b64"]) == binary
    assert second["data"] == "from a file"
    assert third["data"] == ""


async def _declare(store: Path, topic: str) -> None:
    async with jk.Stream.open(store_dir=store) as s:
        await s.declare_topic(topic, mode=jk.TopicMode.JETSTREAM)


def _sub_then_close_the_pipe(store: Path, then_publish: bool) -> None:
    """``jetkit sub ... | head -1``: read one line, close the pipe, expect exit 0 and
    nothing on stderr (``then_publish``: another message arrives after the close)."""
    command = ["sub", "orders.events", "--from-start", "--store-dir", str(store)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "jetkit", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith(b"#1 orders.events")
        proc.stdout.close()
        if then_publish:
            ok("pub", "orders.events", "one more", "--store-dir", store)
        assert proc.wait(30) == 0
        assert proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_sub_stops_quietly_when_the_reader_goes(store: Path) -> None:
    _sub_then_close_the_pipe(store, then_publish=True)


def test_sub_ends_when_the_reader_goes_even_on_a_quiet_topic(store: Path) -> None:
    """No message needed: sub notices the closed pipe by itself."""
    _sub_then_close_the_pipe(store, then_publish=False)


def test_dlq_on_a_topic_without_dead_letters_says_so(filled: Path) -> None:
    result = jetkit("dlq", "orders.events", "--store-dir", filled)
    assert result.returncode == 2
    assert result.stderr.decode().startswith("error: 'orders.events' holds 2 message(s) but no")


def test_sub_durable_acks_only_what_it_printed(store: Path) -> None:
    args = ("sub", "orders.events", "--durable", "cli", "--from-start", "--count", "1")
    assert ok(*args, "--store-dir", store) == '#1 orders.events {"order_id": "order-1"}\n'
    rows = tsv(ok("consumers", "orders.events", "--store-dir", store))
    assert {r["consumer"]: r["ack_floor"] for r in rows}["cli"] == "1"  # not 2: #2 not printed


# -- terminals ----------------------------------------------------------------------------


def test_tables_on_a_terminal_fit_80_columns_and_keep_names_whole(filled: Path) -> None:
    for args, names in [
        (["topics"], ["orders.events", "failed.hostile.events", "hostile.events"]),
        (["consumers", "hostile.events"], ["hostile-processor-with-a-long-name"]),
        (["topic", "hostile.events"], ["hostile_events", "last_seq"]),
        (
            ["dlq", "failed.hostile.events"],
            ["hostile.events", "hostile-processor-with-a-long-name"],
        ),
    ]:
        out = on_terminal(*args, "--store-dir", filled, columns=80)
        lines = out.splitlines()
        assert all(cell_len(line) <= 80 for line in lines), out
        words = set(out.split())
        for name in names:
            assert name in words, f"{name!r} not whole in:\n{out}"
        assert "\x1b" not in out  # only rich's own styles, stripped above


def test_hostile_payloads_on_a_terminal_are_text(filled: Path) -> None:
    out = on_terminal("dlq", "failed.hostile.events", "--store-dir", filled, columns=200)
    assert "[/red]" in out and "[link=http://x]click[/link]" in out
    assert "\\x1b[31mred" in out and "\\xff\\xfe not utf-8" in out
    assert "6 dead letter(s) in failed.hostile.events" in out
    out = on_terminal(
        "sub", "hostile.events", "--from-start", "--count", "6", "--store-dir", filled
    )
    assert "#1 hostile.events [/red]\n" in out
    assert "#2 hostile.events [link=http://x]click[/link]\n" in out
    assert "#3 hostile.events \\x1b[31mred\\x1b[0m\n" in out
    assert "x" * 5000 in out.replace("\n", "")


# -- errors -------------------------------------------------------------------------------


def test_inspection_never_creates_a_store(tmp_path: Path) -> None:
    for command in (
        ["topics"],
        ["topic", "x"],
        ["consumers", "x"],
        ["dlq", "x"],
        ["top", "--once"],
    ):
        result = jetkit(*command, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.decode() == (
            "error: no jetkit store at ./jetstream-store: run `jetkit demo` or `jetkit server` "
            "there first, or pass --store-dir DIR, --cluster DIR or --server URL\n"
        )
        assert result.stdout == b""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = jetkit("topics", "--store-dir", empty)
    assert result.returncode == 2 and b"no jetkit store at " + bytes(empty) in result.stderr
    assert list(tmp_path.iterdir()) == [empty] and list(empty.iterdir()) == []
    # a stopped cluster's directory (its ports kept): said so, nothing started there
    stopped = tmp_path / "cluster"
    stopped.mkdir()
    (stopped / "jetkit-cluster-ports.json").write_text("[]")
    result = jetkit("topics", "--store-dir", stopped)
    assert result.returncode == 2, result.stderr
    assert b"no running cluster at " + bytes(stopped) in result.stderr
    assert b"jetkit cluster --store-dir" in result.stderr
    assert [p.name for p in stopped.iterdir()] == ["jetkit-cluster-ports.json"]


def test_port_in_use_speaks_of_the_port_option(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = jetkit("server", "--port", str(port), "--store-dir", tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 2 and err.count("\n") == 1, err
    assert f"port {port}" in err and "no --port" in err and "port=None" not in err


def test_help_prints_usage_and_ctrl_c_stops_the_server_quietly(tmp_path: Path) -> None:
    result = jetkit("--help")
    assert result.returncode == 0 and b"Usage" in result.stdout
    result = jetkit("sub", "--help")
    assert result.returncode == 0 and b"--json" in result.stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "jetkit", "server", "--store-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith(b"nats-server running at nats://127.0.0.1:")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert proc.stderr.read() == b""
    finally:
        stop_process(proc)


# -- writing ------------------------------------------------------------------------------


def test_pub_stores_and_dedupes_sub_reads_back_and_dlq_redrive_empties_the_dlq(store: Path) -> None:
    out = ok(
        "pub",
        "orders.events",
        '{"order_id": "order-3"}',
        "-H",
        "k=v",
        "--msg-id",
        "o3",
        "--store-dir",
        store,
    )
    assert out == "stored in orders_events at seq 3\n"
    out = ok("pub", "orders.events", "again", "--msg-id", "o3", "--store-dir", store)
    assert "duplicate" in out
    out = ok("pub", "live.only", "hi", "--store-dir", store)
    assert "core" in out
    out = ok("sub", "orders.events", "--from-start", "--count", "2", "--store-dir", store)
    assert out.splitlines() == [
        '#1 orders.events {"order_id": "order-1"}',
        '#2 orders.events {"order_id": "order-2"}',
    ]
    result = jetkit("dlq", "failed.orders", "--redrive", "--store-dir", store)
    assert result.returncode == 0, result.stderr
    assert "re-drove 1" in result.stderr.decode()
    assert tsv(ok("dlq", "failed.orders", "--store-dir", store)) == []
    fields = {
        r["field"]: r["value"] for r in tsv(ok("topic", "orders.events", "--store-dir", store))
    }
    assert fields["messages"] == "4"  # two, the third, and the re-driven one


def test_pub_stores_with_ttl_schedules_with_deliver_after_and_cancel_stops_delivery(
    store: Path,
) -> None:
    out = ok("pub", "new.stored", "kept", "--stored", "--store-dir", store)
    assert out == "stored in new_stored at seq 1\n"
    out = ok("pub", "new.expiring", "gone soon", "--ttl", "60", "--store-dir", store)
    assert out == "stored in new_expiring at seq 1\n"
    out = ok("pub", "new.later", "later", "--deliver-after", "3600", "--store-dir", store)
    assert out.startswith("scheduled for ") and " on new.later; cancel with: " in out
    command = out.split("cancel with: ", 1)[1].split()
    assert command[:4] == ["jetkit", "cancel", "new.later", "--msg-id"]
    assert ok(*command[1:], "--store-dir", store).startswith("cancelled:")
    again = jetkit(*command[1:], "--store-dir", store)
    assert again.returncode == 1  # no longer pending
    assert b"nothing to cancel" in again.stdout
    # the cancelled message is never delivered: a sentinel stored after it is the first
    ok("pub", "new.later", "sentinel", "--store-dir", store)
    assert ok("sub", "new.later", "--from-start", "--count", "1", "--store-dir", store) == (
        "#2 new.later sentinel\n"
    )


# -- jetkit top ---------------------------------------------------------------------------


def _sections(text: str) -> list[list[dict[str, str]]]:
    return [tsv(block) for block in text.strip("\n").split("\n\n")]


def test_top_once_in_a_pipe_is_two_tab_separated_tables(filled: Path) -> None:
    topics, consumers = _sections(ok("top", "--once", "--interval", "0.1", "--store-dir", filled))
    by_topic = {row["topic"]: row for row in topics}
    assert by_topic["orders.events"]["messages"] == "2"
    assert by_topic["hostile.events"]["messages"] == str(len(HOSTILE))
    assert int(by_topic["orders.events"]["bytes"]) > 0
    assert float(by_topic["orders.events"]["msg/s"]) == 0.0  # nothing published meanwhile
    assert set(consumers[0]) == {"topic", "consumer", "lag", "ack_pend", "redeliv", "ack/s"}
    by_consumer = {row["consumer"]: row for row in consumers}
    assert by_consumer["proc"]["topic"] == "orders.events"
    assert by_consumer["hostile-processor-with-a-long-name"]["lag"] == "0"


def test_top_once_on_a_terminal_fits_80_columns(filled: Path) -> None:
    text = on_terminal("top", "--once", "--interval", "0.1", "--store-dir", filled)
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    assert "topics" in lines[0]
    cells = "".join(
        line.split("│")[2].strip() for line in lines if line.count("│") == 8
    )  # the consumers table's second column, wrapped pieces joined again
    assert "hostile-processor-with-a-long-name" in cells


# -- jetkit dlq: reading, selecting, re-driving and discarding letters --------------------


def dlq_seqs(store: Path, *args: str) -> list[int]:
    out = ok("dlq", "failed.mixed", "--json", *args, "--store-dir", store)
    return [json.loads(line)["seq"] for line in out.splitlines()]


def test_dlq_on_a_terminal_keeps_the_error_whole_at_80_columns(letters: Path) -> None:
    out = on_terminal("dlq", "failed.mixed", "--store-dir", letters, columns=80)
    assert all(cell_len(line) <= 80 for line in out.splitlines()), out
    flat = " ".join(out.split())  # wrapped lines joined again
    for _, _, _, error, _ in LETTERS:
        assert error in flat, out
    words = set(out.split())
    assert {"payments-processor-with-a-long-name", "payments.events", "orders.events"} <= words
    assert "3 dead letter(s) in failed.mixed" in flat


def test_dlq_json_is_one_object_per_letter(letters: Path) -> None:
    result = jetkit("dlq", "failed.mixed", "--json", "--store-dir", letters)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    first = records[0]
    assert first == {
        "topic": "failed.mixed",
        "seq": 1,
        "timestamp": first["timestamp"],
        "original_topic": "orders.events",
        "original_seq": 1,
        "deliveries": 3,
        "consumer": "proc",
        "error": "RuntimeError: boom",
        "redrives": 0,
        "headers": {"trace": "t1"},
        "data": '{"order_id": "order-1"}',
    }
    assert first["timestamp"].endswith("+00:00")
    assert records[1]["error"] == LONG_ERROR and "data" not in records[1]
    assert base64.b64decode(records[1]["data_b64"]) == b"\xff\xfe bin"
    assert result.stderr.decode() == "3 dead letter(s) in failed.mixed\n"  # not in the JSON


def test_dlq_selects_with_limit_and_filters(letters: Path) -> None:
    assert dlq_seqs(letters) == [1, 2, 3]
    assert dlq_seqs(letters, "--limit", "2") == [1, 2]
    assert dlq_seqs(letters, "--error-contains", "timeout") == [2]  # any case
    assert dlq_seqs(letters, "--original-topic", "payments.events") == [2, 3]
    assert dlq_seqs(letters, "--original-topic", "payments.>") == [2, 3]
    assert dlq_seqs(letters, "--consumer", "proc") == [1]
    assert dlq_seqs(letters, "--original-topic", "payments.*", "--error-contains", "declined") == [
        3
    ]
    assert dlq_seqs(letters, "--original-topic", "payments.*", "--limit", "1") == [2]
    assert dlq_seqs(letters, "--error-contains", "no such error") == []
    result = jetkit("dlq", "failed.mixed", "--consumer", "proc", "--store-dir", letters)
    assert [row["seq"] for row in tsv(result.stdout.decode())] == ["1"]
    assert result.stderr.decode() == "1 of 3 dead letter(s) in failed.mixed selected\n"


def test_dlq_redrive_honours_the_selection_and_discard_deletes_one(tmp_path: Path) -> None:
    fill_letters(tmp_path)
    result = jetkit(
        "dlq",
        "failed.mixed",
        "--redrive",
        "--original-topic",
        "payments.events",
        "--error-contains",
        "declined",
        "--store-dir",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert [row["seq"] for row in tsv(result.stdout.decode())] == ["3"]  # what it re-drove
    assert "re-drove 1 to their topics" in result.stderr.decode()
    assert "kept 2 that were not selected" in result.stderr.decode()
    assert dlq_seqs(tmp_path) == [1, 2]
    out = ok("sub", "payments.events", "--from-start", "--count", "1", "--store-dir", tmp_path)
    assert out == "#1 payments.events c\n"

    result = jetkit("dlq", "failed.mixed", "--discard", "2", "--store-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "discarded dead letter 2 of failed.mixed\n"
    assert dlq_seqs(tmp_path) == [1]
    again = jetkit("dlq", "failed.mixed", "--discard", "2", "--store-dir", tmp_path)
    assert again.returncode == 1
    assert again.stdout.decode() == (
        "no message at seq 2 of failed.mixed: already re-driven or discarded, or never there\n"
    )
    assert ok("pub", "failed.mixed", "plain", "--store-dir", tmp_path) == (
        "stored in failed_mixed at seq 4\n"
    )
    refused = jetkit("dlq", "failed.mixed", "--discard", "4", "--store-dir", tmp_path)
    err = refused.stderr.decode()
    assert refused.returncode == 2 and err.count("\n") == 1, err
    assert err.startswith("error: seq 4 of 'failed.mixed' is not a dead letter")
    assert dlq_seqs(tmp_path) == [1]


def test_help_shows_no_value_beside_flags() -> None:
    for command in ([], ["sub"], ["dlq"], ["pub"], ["top"], ["ui"], ["examples"]):
        out = ok(*command, "--help")
        assert "--help" in out and "<bool>" not in out, (command, out)
    assert "<int>" in ok("sub", "--help")  # an option that takes a value still says which


CLI_DOC = ROOT / "docs" / "cli.md"


def test_the_documented_jq_example_prints_the_payload(filled: Path) -> None:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    (line,) = [line for line in CLI_DOC.read_text().splitlines() if "--json | jq" in line]
    ours, theirs = line.split("#", 1)[0].split("|")
    out = ok(*shlex.split(ours)[1:], "--from-start", "--count", "2", "--store-dir", filled)
    shown = subprocess.run(
        shlex.split(theirs), input=out.encode(), capture_output=True, check=True, timeout=30
    )
    assert shown.stdout == b'{"order_id": "order-1"}\n{"order_id": "order-2"}\n'


def test_the_cli_reference_is_generated_from_the_commands() -> None:
    import cli_reference

    assert CLI_DOC.read_text() == cli_reference.generate(CLI_DOC.read_text()), (
        "docs/cli.md is out of date: run `python tests/cli_reference.py`"
    )


def test_version_prints_the_one_version_the_package_has() -> None:
    import importlib.metadata

    out = ok("--version")
    assert out == f"jetkit {jk.__version__}\n"
    assert importlib.metadata.version("jetkit") == jk.__version__  # pyproject reads it
