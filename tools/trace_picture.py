"""Draw docs/images/tracing-trace.png: one trace across a publisher, retries and the DLQ.

    python tools/trace_picture.py [OUT.png]

It runs the scenario of docs/tracing.md against a temporary store (a handler that fails
every attempt, ``max_deliver=3`` with a backoff, a DLQ with a reader), keeps the spans
in the OpenTelemetry SDK's InMemorySpanExporter, and draws them as a trace view does:
one bar per span on a shared time axis, children under their parent, PRODUCER/CONSUMER
by colour, failed attempts outlined red, naks and terms as markers. Needs matplotlib
(the ``bench`` extra) and the SDK (the ``test`` extra).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

import jetkit as jk

OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "tracing-trace.png"
COLOURS = {
    SpanKind.INTERNAL: "#9e9e9e",
    SpanKind.PRODUCER: "#4c78a8",
    SpanKind.CONSUMER: "#59a14f",
}


async def record() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("checkout-service")
    async with jk.Stream.open(default_mode=jk.TopicMode.JETSTREAM, tracing=provider) as s:
        done = asyncio.Event()

        async def charge(msg: jk.Message) -> None:
            await asyncio.sleep(0.03)  # the payment provider, timing out
            raise TimeoutError("payment provider did not answer")

        async def park(msg: jk.Message) -> None:
            await asyncio.sleep(0.01)
            done.set()

        await s.subscribe("failed.orders", park, durable="dlq-reader")
        await s.subscribe(
            "orders.created",
            charge,
            durable="billing",
            ack=jk.AckPolicy.MANUAL,
            max_deliver=3,
            backoff=[0.1, 0.2],
            dlq="failed.orders",
        )
        with tracer.start_as_current_span("POST /checkout"):
            await asyncio.sleep(0.01)
            await s.publish("orders.created", b'{"order_id": "o-17"}', msg_id="o-17")
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.sleep(0.05)  # the DLQ reader's span ends after its handler
    provider.shutdown()
    return list(exporter.get_finished_spans())


def draw(spans: list[ReadableSpan], out: Path) -> None:
    by_id = {s.context.span_id: s for s in spans}

    def depth(span: ReadableSpan) -> int:
        parent = span.parent.span_id if span.parent is not None else None
        return 0 if parent not in by_id else 1 + depth(by_id[parent])

    order = sorted(spans, key=lambda s: s.start_time or 0)
    origin = min(s.start_time or 0 for s in spans)
    fig, ax = plt.subplots(figsize=(9.0, 0.42 * len(order) + 0.9), dpi=100)
    for row, span in enumerate(order):
        start = ((span.start_time or 0) - origin) / 1e6
        length = max(((span.end_time or 0) - (span.start_time or 0)) / 1e6, 0.8)
        failed = span.status.status_code is StatusCode.ERROR
        ax.barh(
            row,
            length,
            left=start,
            height=0.6,
            color=COLOURS.get(span.kind, "#9e9e9e"),
            edgecolor="#d62728" if failed else "none",
            linewidth=2 if failed else 0,
        )
        attempt = (span.attributes or {}).get("messaging.nats.message.delivery_count")
        label = "  " * depth(span) + span.name + (f"  (attempt {attempt})" if attempt else "")
        ax.text(
            -0.66,
            row,
            label,
            ha="left",
            va="center",
            fontsize=8.5,
            family="monospace",
            transform=ax.get_yaxis_transform(),
        )
        for event in span.events:
            if event.name in ("nak", "term"):
                at = (event.timestamp - origin) / 1e6
                delay = (event.attributes or {}).get("jetkit.nak.delay")
                text = f"nak {delay:g}s" if delay else event.name
                ax.plot(at, row, marker="v", color="black", markersize=5)
                ax.text(at + 3, row - 0.35, text, fontsize=7.5, va="bottom")
    ax.set_ylim(len(order) - 0.4, -0.6)
    ax.set_yticks([])
    ax.set_xlabel("milliseconds since the request began")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=COLOURS[SpanKind.PRODUCER]),
        plt.Rectangle((0, 0), 1, 1, color=COLOURS[SpanKind.CONSUMER]),
        plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="#d62728", linewidth=2),
    ]
    ax.legend(
        handles,
        ["PRODUCER (publish)", "CONSUMER (process)", "status ERROR"],
        loc="upper right",
        fontsize=7.5,
        frameon=False,
    )
    ax.set_title(
        f"one trace ({spans[0].context.trace_id:032x}): {len(spans)} spans",
        fontsize=9,
        loc="right",
    )
    fig.subplots_adjust(left=0.4, right=0.97, top=0.9, bottom=0.6 / (0.42 * len(order) + 0.9))
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    spans = asyncio.run(record())
    assert len({s.context.trace_id for s in spans}) == 1, "the spans are not one trace"
    draw(spans, out)
    print(f"{out}: {len(spans)} spans")


if __name__ == "__main__":
    main()
