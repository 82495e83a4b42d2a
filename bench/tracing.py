"""The TracerProvider of the bench's ``jetkit+tracing`` runs and of ``bench.callgrind
--tracing``: every span built and handed to the SDK's BatchSpanProcessor, whose exporter
drops it (tracing's cost in the client, without a collector or a network)."""

from __future__ import annotations

from typing import Any


def dropping_provider() -> Any:
    """A new TracerProvider that batches every span and drops it (``shutdown()`` it)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return provider
