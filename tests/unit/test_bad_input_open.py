"""Bad input to the open surface, gathered here (made table-driven in the next commit)."""

from __future__ import annotations

import ssl
import threading

import pytest

import jetkit as jk
import jetkit.sync as jsync


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"metrics_port": -1}, "metrics_port"),
        ({"metrics_port": 70000}, "metrics_port"),
        ({"metrics_port": "9100"}, "metrics_port"),
        ({"metrics_port": True}, "metrics_port"),
        ({"metrics_port": 0, "metrics_host": ""}, "metrics_host"),
        ({"metrics_port": 0, "metrics_host": "  "}, "metrics_host"),
        ({"metrics_port": 0, "metrics_host": "not a host"}, "metrics_host 'not a host'"),
    ],
)
async def test_bad_metrics_options(options: dict[str, object], match: str) -> None:
    with pytest.raises(jk.ConfigError, match=match):
        await jk.Stream.open(**options)  # type: ignore[arg-type]


def test_a_bad_option_raises_before_any_thread_starts() -> None:
    before = threading.active_count()
    with pytest.raises(jk.ConfigError):
        jsync.Stream.open(drain_timeout=-1)
    assert threading.active_count() == before


async def test_bad_options() -> None:
    with pytest.raises(jk.ConfigError):
        jk.Stream.open(store_dir="x", servers=["nats://127.0.0.1:1"])
    with pytest.raises(jk.ConfigError):
        jk.Stream.open(user="u")
    with pytest.raises(jk.ConfigError):
        jk.Stream.open(port=70000)
    with pytest.raises(jk.ConfigError, match="default_mode must be one of"):
        jk.Stream.open(default_mode="stored")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "creds",
    [{"user": "", "password": "p"}, {"user": "u", "password": ""}, {"token": ""}],
)
def test_empty_credentials_are_refused(creds: dict[str, str]) -> None:
    with pytest.raises(jk.ConfigError, match="non-empty"):
        jk.Stream.open(**creds)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["yes", True, {"cafile": "ca.pem"}, ssl.PROTOCOL_TLS_CLIENT])
def test_tls_must_be_an_ssl_context(bad: object) -> None:
    with pytest.raises(jk.ConfigError, match=r"tls must be an ssl\.SSLContext"):
        jk.Stream.open(servers=["tls://127.0.0.1:4222"], tls=bad)  # type: ignore[arg-type]
