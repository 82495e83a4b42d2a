"""Bad input to opening: every option of ``Stream.open`` and ``jetkit.sync.Stream.open``
(and of ``jetkit.testing``'s local cluster) is refused before any server starts, and no
thread is left behind.

One table: each row is the options given, the error, a fragment of its message (a
regular expression, as ``pytest.raises(match=)`` reads it) and when ``Stream.open``
refuses it: ``AT_CALL`` (it is not awaited, so a refusal that needed the event loop
would fail) or, for a metrics host, which is looked up when the Stream starts (first
thing, before its server), ``AWAITED``. Every row runs against both openers;
``jetkit.sync`` refuses all of them at the call. (Refusals that need the file system, a
binary or a port: test_server_start.py.)
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Any

import pytest

import jetkit as jk
import jetkit.sync as jsync
import jetkit.testing as jt

OPENERS: dict[str, Callable[..., object]] = {
    "Stream.open": jk.Stream.open,
    "sync.Stream.open": jsync.Stream.open,
}
AT_CALL, AWAITED = "at the call", "when awaited"

# (options, error, message fragment, when Stream.open refuses it); the id names the value
BAD_OPTIONS = [
    pytest.param(
        {"store_dir": "x", "servers": ["nats://127.0.0.1:1"]},
        jk.ConfigError,
        r"store_dir \(embedded server\) or servers \(external\), not both",
        AT_CALL,
        id="store_dir-and-servers",
    ),
    pytest.param(
        {"store_dir": ""}, jk.ConfigError, "store_dir is empty", AT_CALL, id="store_dir-empty"
    ),
    pytest.param(
        {"user": "u"}, jk.ConfigError, "user and password", AT_CALL, id="user-without-password"
    ),
    pytest.param({"port": 70000}, jk.ConfigError, "port", AT_CALL, id="port-70000"),
    pytest.param(
        {"default_mode": "stored"},
        jk.ConfigError,
        "default_mode must be one of",
        AT_CALL,
        id="default_mode-str",
    ),
    pytest.param(
        {"drain_timeout": -1}, jk.ConfigError, "drain_timeout", AT_CALL, id="drain_timeout--1"
    ),
    pytest.param(
        {"ping_interval": 0},
        jk.ConfigError,
        r"ping_interval must be > 0, got 0 \(seconds between PINGs",
        AT_CALL,
        id="ping_interval-0",
    ),
    pytest.param(
        {"ping_interval": "3s"},
        jk.ConfigError,
        "ping_interval must be a number",
        AT_CALL,
        id="ping_interval-str",
    ),
    pytest.param(
        {"max_outstanding_pings": 0},
        jk.ConfigError,
        r"max_outstanding_pings must be >= 1.*unanswered PINGs",
        AT_CALL,
        id="max_outstanding_pings-0",
    ),
    pytest.param(
        {"max_outstanding_pings": 2.5},
        jk.ConfigError,
        "max_outstanding_pings must be a whole number",
        AT_CALL,
        id="max_outstanding_pings-float",
    ),
    pytest.param(
        {"failover_after": -5},
        jk.ConfigError,
        r"failover_after must be > 0.*None: never move",
        AT_CALL,
        id="failover_after--5",
    ),
    pytest.param(
        {"metrics_port": -1}, jk.ConfigError, "metrics_port", AT_CALL, id="metrics_port--1"
    ),
    pytest.param(
        {"metrics_port": 70000},
        jk.ConfigError,
        "metrics_port",
        AT_CALL,
        id="metrics_port-70000",
    ),
    pytest.param(
        {"metrics_port": "9100"}, jk.ConfigError, "metrics_port", AT_CALL, id="metrics_port-str"
    ),
    pytest.param(
        {"metrics_port": True}, jk.ConfigError, "metrics_port", AT_CALL, id="metrics_port-True"
    ),
    pytest.param(
        {"metrics_port": 0, "metrics_host": ""},
        jk.ConfigError,
        "metrics_host",
        AT_CALL,
        id="metrics_host-empty",
    ),
    pytest.param(
        {"metrics_port": 0, "metrics_host": "  "},
        jk.ConfigError,
        "metrics_host",
        AT_CALL,
        id="metrics_host-blank",
    ),
    pytest.param(
        {"metrics_port": 0, "metrics_host": "not a host"},
        jk.ConfigError,
        "metrics_host 'not a host'",
        AWAITED,
        id="metrics_host-not-a-host",
    ),
    pytest.param(
        {"user": "", "password": "p"}, jk.ConfigError, "non-empty", AT_CALL, id="user-empty"
    ),
    pytest.param(
        {"user": "u", "password": ""}, jk.ConfigError, "non-empty", AT_CALL, id="password-empty"
    ),
    pytest.param({"token": ""}, jk.ConfigError, "non-empty", AT_CALL, id="token-empty"),
    *(
        pytest.param(
            {"servers": ["tls://127.0.0.1:4222"], "tls": bad},
            jk.ConfigError,
            r"tls must be an ssl\.SSLContext",
            AT_CALL,
            id=f"tls-{name}",
        )
        for name, bad in [
            ("str", "yes"),
            ("True", True),
            ("dict", {"cafile": "ca.pem"}),
            ("protocol", ssl.PROTOCOL_TLS_CLIENT),
        ]
    ),
    *(
        pytest.param(
            {"tracing": bad},
            jk.ConfigError,
            "tracing must be True, False or an OpenTelemetry TracerProvider",
            AT_CALL,
            id=f"tracing-{name}",
        )
        for name, bad in [("str", "yes"), ("1", 1), ("None", None), ("tracer", object())]
    ),
    pytest.param(
        {"stor_dir": "./x"},
        jk.UnknownOptionError,  # a TypeError too, as Python's own would be
        r"Stream\.open\(\) has no option 'stor_dir'",
        AT_CALL,
        id="unknown-stor_dir",
    ),
]


@pytest.mark.parametrize("opener", list(OPENERS))
@pytest.mark.parametrize(("options", "error", "match", "when"), BAD_OPTIONS)
async def test_a_bad_option_is_refused_before_any_server_or_thread_starts(
    opener: str, options: dict[str, Any], error: type[Exception], match: str, when: str
) -> None:
    threads = threading.active_count()
    with pytest.raises(error, match=match):
        opened = OPENERS[opener](**options)
        if opener == "Stream.open" and when == AWAITED:
            await opened  # type: ignore[misc]
    assert threading.active_count() == threads  # no loop thread, no server supervisor left


# (the call, error, message fragment)
BAD_CLUSTER_OPTIONS = [
    pytest.param(
        lambda: jt.LocalCluster(3, sync=True),
        jk.UnknownOptionError,
        "LocalCluster",
        id="LocalCluster-unknown-sync",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), BAD_CLUSTER_OPTIONS)
def test_a_bad_local_cluster_option_is_refused_before_any_node_starts(
    call: Callable[[], object], error: type[Exception], match: str
) -> None:
    threads = threading.active_count()
    with pytest.raises(error, match=match):
        call()
    assert threading.active_count() == threads
