"""Bad input to the command line: every command refuses a bad argument, option or
target with one line on stderr and exit status 2, and creates nothing.

One table: each row is the arguments of ``python -m jetkit`` and what stderr must say (a
fragment; one that starts with ``error: `` must start the line). In the arguments,
``{tmp}`` is the test's own directory (holding ``file``, a file, and ``cwd``, the empty
directory the command runs in), ``{filled}`` and ``{letters}`` the stores of
tests/tools/conftest.py. After every row stdout is empty, stderr is one line that starts
with ``error: `` and shows no Python internals, and ``{tmp}`` holds nothing new: no store
was created, no server started there (a row may name what its command may leave). (A
port that is taken, a store that is missing: test_cli.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import jetkit

pytestmark = pytest.mark.slow

# what a Python error would leave in a message meant for people
PYTHON = ("port=None", "ParseResult", "Traceback", "╭", "Errno", "=None")


def row(*args: str, says: str, may_leave: tuple[str, ...] = ()) -> object:
    return pytest.param(args, says, may_leave, id=" ".join(args).replace("{tmp}/", "")[:60])


# (arguments, what stderr says, what the command may leave in {tmp} today)
BAD_COMMANDS = [
    # servers, the demo and the examples' options
    row("server", "--port", "-1", "--store-dir", "{tmp}/a", says="invalid value for '--port'"),
    row("server", "--port", "99999", "--store-dir", "{tmp}/a", says="or equal to 65535"),
    row("server", "--port", "many", says="--port"),
    row("demo", "--metrics-port", "99999", "--store-dir", "{tmp}/a", says="--metrics-port"),
    *(
        row(
            "demo",
            "--store-dir",
            "{tmp}/store",
            option,
            value,
            says=f"error: invalid value for {option}: {value} ",
        )
        for option, value in [
            ("--fail-rate", "2"),
            ("--duration", "-1"),
            ("--duration", "0"),
            ("--order-interval", "0"),
            ("--analytics-delay", "-1"),
        ]
    ),
    row("demo", "--order-interval", "nan", "--store-dir", "{tmp}/d", says="--order-interval"),
    # publishing and subscribing
    # (the topic is checked before the store is opened: nothing is made)
    row("sub", "a b", "--store-dir", "{tmp}/a", says="whitespace"),
    row("sub", "$JS.API.x", "--store-dir", "{tmp}/a", says="starts with '$'"),
    row("pub", "a b", "x", "--store-dir", "{tmp}/a", says="whitespace"),
    row("pub", "orders.*", "x", "--store-dir", "{tmp}/a", says="wildcard"),
    row("sub", "x", "--count", "0", says="--count: 0 is not 1 or more"),
    row("sub", "x", "--count", "-3", says="--count: -3 is not 1 or more"),
    row("pub", says="missing argument 'TOPIC'"),
    row("pub", "a.b", says="give the payload"),
    row("pub", "a.b", "x", "--header", "bad", "--store-dir", "{tmp}/a", says="KEY=VALUE"),
    row("pub", "a.b", "x", "--store-dir", "{tmp}/file/s", says="not writable"),
    row("pub", "a.b", "x", "--file", "{tmp}/file", says="DATA or --file, not both"),
    row("pub", "a.b", "--file", "{tmp}/missing", says="cannot read"),
    row("pub", "new.bad", "x", "--ttl", "0.5", "--store-dir", "{tmp}/s", says="1 second"),
    row("pub", "new.bad", "x", "--ttl", "inf", "--store-dir", "{tmp}/s", says="--ttl"),
    row(
        "pub",
        "new.bad",
        "x",
        "--deliver-after",
        "-1",
        "--store-dir",
        "{tmp}/s",
        says="--deliver-after",
    ),
    row(
        "pub",
        "new.bad",
        "x",
        "--deliver-after",
        "x",
        "--store-dir",
        "{tmp}/s",
        says="--deliver-after",
    ),
    # inspecting
    row("topics", "--server", "nats://127.0.0.1:1", says="connection refused"),
    row("topics", "--store-dir", "{tmp}/" + "d" * 120, says="no jetkit store"),
    row("topic", "no.such.topic", "--store-dir", "{filled}", says="no.such.topic"),
    *(
        row(
            "top",
            "--interval",
            value,
            "--store-dir",
            "{filled}",
            says="error: invalid value for --interval",
        )
        for value in ("0", "-1", "nan", "5000")
    ),
    # dead letters
    row("dlq", "orders.events", "--redrive", "--store-dir", "{filled}", says="no dead letter"),
    *(
        row("dlq", "failed.mixed", *args, "--store-dir", "{letters}", says=says)
        for args, says in [
            (["--limit", "0"], "--limit"),
            (["--original-topic", "a b"], "--original-topic"),
            (["--discard", "0"], "--discard"),
            (["--discard", "1", "--redrive"], "--discard"),
            (["--discard", "1", "--consumer", "proc"], "--discard"),
        ]
    ),
    row("nosuch", says="no such command 'nosuch'"),
]


@pytest.mark.parametrize(("args", "says", "may_leave"), BAD_COMMANDS)
def test_a_bad_command_line_is_one_line_on_stderr_exit_2_and_creates_nothing(
    args: tuple[str, ...],
    says: str,
    may_leave: tuple[str, ...],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    (tmp_path / "file").write_text("x")
    work = tmp_path / "cwd"
    work.mkdir()
    stores = {name: str(request.getfixturevalue(name)) for name in ("filled", "letters")}
    given = [a.replace("{tmp}", str(tmp_path)).format(**stores) if "{" in a else a for a in args]
    result = jetkit(*given, cwd=work)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert result.stdout == b""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert err.startswith(says) if says.startswith("error: ") else says in err, err
    assert not [python for python in PYTHON if python in err], err
    # refused before anything was created
    assert {p.name for p in tmp_path.iterdir()} - set(may_leave) == {"cwd", "file"}
    assert list(work.iterdir()) == []
