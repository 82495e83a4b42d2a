"""Tracing without a server: OpenTelemetry stays unloaded while tracing is off, the option
is checked, and the pieces that read headers and settlement tokens."""

from __future__ import annotations

import subprocess
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import jetkit as jk
from jetkit import _options, _tracing


def test_jetkit_never_loads_opentelemetry_while_tracing_is_off() -> None:
    code = (
        "import sys, jetkit, jetkit.sync; from jetkit import _options; "
        "_options.open_options(); "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_tracing_without_opentelemetry_installed_says_which_extra_to_install() -> None:
    # opentelemetry made unimportable in a child: what a user without jetkit[otel] has
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import jetkit as jk; from jetkit import _options\n"
        "assert _options.open_options().tracing is False\n"
        "try:\n"
        "    _options.open_options(tracing=True)\n"
        "except jk.ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'jetkit[otel]'" in done.stdout


def test_tracing_takes_true_false_or_a_tracer_provider() -> None:
    provider = TracerProvider()
    assert _options.open_options().tracing is False
    assert _options.open_options(tracing=True).tracing is True
    assert _options.open_options(tracing=provider).tracing is provider


def test_the_trace_context_is_read_from_headers_in_any_case() -> None:
    # a Go service injecting through propagation.HeaderCarrier sends "Traceparent"
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for name in ("traceparent", "Traceparent", "TRACEPARENT"):
        ctx = _tracing.Tracing.parent({name: parent, "Order-Id": "1"})
        span = trace.get_current_span(ctx).get_span_context()
        assert format(span.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
        assert format(span.span_id, "016x") == "b7ad6b7169203331"
    assert not trace.get_current_span(_tracing.Tracing.parent({})).get_span_context().is_valid


def test_a_nak_and_a_term_are_events_with_their_delay_and_reason() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("attempt"):
        _tracing.Tracing.settled(b'-NAK {"delay": 1500000000}')
        _tracing.Tracing.settled(b"-NAK")
        _tracing.Tracing.settled(b"+TERM jetkit: RuntimeError: boom")
        _tracing.Tracing.failed(jk.RemoteError("ValueError", "bad"))
        ids = _tracing.Tracing.log_ids()
    (span,) = exporter.get_finished_spans()
    events = [(e.name, dict(e.attributes or {})) for e in span.events if e.name != "exception"]
    assert events == [
        ("nak", {"jetkit.nak.delay": 1.5}),
        ("nak", {}),
        ("term", {"jetkit.term.reason": "jetkit: RuntimeError: boom"}),
    ]
    assert span.attributes is not None
    assert span.attributes["error.type"] == "jetkit._errors.RemoteError"
    assert span.status.status_code is trace.StatusCode.ERROR
    assert ids == {
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
    }
    assert _tracing.Tracing.log_ids() == {}  # no span: no ids
