"""The results as a rich table, a JSON file and a PNG chart."""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .measure import Lost, Metric, Results, Target


@dataclasses.dataclass
class Row:
    """One line of the table: jetkit against one baseline (or alone) for one metric."""

    metric: Metric
    jetkit: float | None
    baseline: str | None
    base_value: float | None
    base_skipped: str | None
    ratio: float | None  # jetkit / baseline
    targets: list[tuple[Target, bool | None, str]]  # target, met?, status text
    jetkit_lost: Lost | None = None  # messages jetkit's measured runs sent but did not get
    base_lost: Lost | None = None

    @property
    def better(self) -> bool | None:
        """True if jetkit beats this baseline."""
        if self.ratio is None:
            return None
        return self.ratio > 1 if self.metric.higher_is_better else self.ratio < 1

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric.key,
            "scenario": self.metric.scenario,
            "label": self.metric.label,
            "unit": self.metric.unit,
            "higher_is_better": self.metric.higher_is_better,
            "jetkit": self.jetkit,
            "baseline": self.baseline,
            "baseline_value": self.base_value,
            "baseline_skipped": self.base_skipped,
            "ratio": self.ratio,
            "jetkit_lost": dataclasses.asdict(self.jetkit_lost) if self.jetkit_lost else None,
            "baseline_lost": dataclasses.asdict(self.base_lost) if self.base_lost else None,
            "targets": [
                {"target": t.describe(self.metric.unit), "met": met, "status": text}
                for t, met, text in self.targets
            ],
        }


def fmt(value: float | None, unit: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if unit == "s":
        return f"{value:.3f}"
    if unit == "MB":
        return f"{value:.1f}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def judge(
    target: Target, metric: Metric, jetkit: float | None, ratio: float | None
) -> tuple[bool | None, str]:
    """Whether jetkit's median meets ``target``, and by how much it misses."""
    if target.min_ratio is not None:
        if ratio is None:
            return None, "n/a"
        if ratio >= target.min_ratio:
            return True, f"met ({ratio:.2f}x)"
        short = (1 - ratio / target.min_ratio) * 100
        return False, f"missed: {ratio:.3g}x, {short:.2g}% short"
    assert target.max_value is not None
    if jetkit is None:
        return None, "n/a"
    unit = metric.unit
    if jetkit <= target.max_value:
        return True, f"met ({fmt(jetkit, unit)} {unit})"
    over = jetkit - target.max_value
    return False, f"missed by {fmt(over, unit)} {unit} (+{over / target.max_value * 100:.0f}%)"


def build_rows(results: Results) -> list[Row]:
    rows = []
    for key, metric in results.metrics.items():
        jetkit = results.median(key, "jetkit")
        absolute = [t for t in metric.targets if t.max_value is not None]
        baselines: list[str | None] = list(metric.baselines) or [None]
        for i, base in enumerate(baselines):
            base_value = results.median(key, base) if base else None
            skipped = results.skipped.get(key, {}).get(base) if base else None
            ratio = (
                jetkit / base_value
                if metric.ratios and jetkit is not None and base_value not in (None, 0)
                else None
            )
            wanted = [t for t in metric.targets if t.baseline == base and base is not None]
            if i == 0:
                wanted += absolute
            targets = [(t, *judge(t, metric, jetkit, ratio)) for t in wanted]
            rows.append(
                Row(
                    metric,
                    jetkit,
                    base,
                    base_value,
                    skipped,
                    ratio,
                    targets,
                    results.lost(key, "jetkit"),
                    results.lost(key, base) if base else None,
                )
            )
    return rows


def table(results: Results, title: str) -> Table:
    rows = build_rows(results)
    out = Table(title=title, show_lines=False, header_style="bold")
    out.add_column("scenario")
    out.add_column("metric")
    out.add_column("unit")
    out.add_column("jetkit", justify="right")
    out.add_column("baseline")
    out.add_column("baseline median", justify="right")
    out.add_column("jetkit/baseline", justify="right")
    out.add_column("target")
    out.add_column("status")
    out.add_column("lost jk / base", justify="right")
    last_metric = None
    for row in rows:
        m = row.metric
        first = m.key != last_metric
        if (
            first
            and last_metric is not None
            and m.scenario != results.metrics[last_metric].scenario
        ):
            out.add_section()
        last_metric = m.key
        unit = m.unit + ("" if m.higher_is_better else " ↓")
        if row.ratio is None:
            ratio = "-"
        else:
            colour = "green" if row.better else "red"
            ratio = f"[{colour}]{row.ratio:.2f}x[/{colour}]"
        if row.baseline is None:
            base_value = ""
        elif row.base_skipped:
            base_value = "[yellow]skipped[/yellow]"
        else:
            base_value = fmt(row.base_value, m.unit)
        target = "\n".join(t.describe(m.unit) for t, _, _ in row.targets)
        status = "\n".join(
            f"[{'green' if met else 'red' if met is False else 'yellow'}]{text}[/]"
            for _, met, text in row.targets
        )
        out.add_row(
            m.scenario if first else "",
            m.label if first else "",
            unit if first else "",
            fmt(row.jetkit, m.unit) if first else "",
            row.baseline or "",
            base_value,
            ratio,
            target,
            status,
            lost_cell(row),
        )
    return out


def _lost(lost: Lost | None) -> str:
    if lost is None:
        return "-"
    if lost.lost < 0:  # received more than was sent: duplicates (or strays); say so
        return f"[red]{-lost.lost:,} extra[/red]"
    text = f"{lost.lost:,}"
    return f"[red]{text}[/red]" if lost.lost else text


def lost_cell(row: Row) -> str:
    """Messages sent but not received, jetkit / baseline ("" where runs report no counts)."""
    if row.jetkit_lost is None and row.base_lost is None:
        return ""
    if row.baseline is None:
        return _lost(row.jetkit_lost)
    return f"{_lost(row.jetkit_lost)} / {_lost(row.base_lost)}"


def footnotes(results: Results) -> list[str]:
    """Skips and notes (drops, failed runs) worth reading next to the table."""
    lines = []
    skips: dict[str, str] = {}
    for reasons in results.skipped.values():
        for impl, reason in reasons.items():
            skips.setdefault(impl, reason)
    for impl, reason in skips.items():
        lines.append(f"{impl}: skipped: {reason}")
    for key, per_impl in results.notes.items():
        metric = results.metrics.get(key)
        for impl, notes in per_impl.items():
            for note in notes:
                where = f"{metric.scenario} / {metric.label}" if metric else key
                lines.append(f"{where} / {impl}: {note}")
    return lines


def print_report(console: Console, results: Results, title: str) -> None:
    console.print(table(results, title))
    console.print(
        "[dim]↓ lower is better; ratios are jetkit/baseline medians of the measured runs "
        "(a warm-up run per implementation came first and is not counted); lost: messages "
        "sent (or pre-filled) that the handler never got, summed over the measured runs "
        "(jetkit / baseline)[/dim]"
    )
    for line in footnotes(results):
        console.print(f"[dim]- {escape(line)}[/dim]", highlight=False)


def write_json(path: Path, results: Results, meta: dict[str, Any]) -> None:
    doc = {
        "meta": meta,
        "rows": [row.as_json() for row in build_rows(results)],
        **results.as_json(),
        "notes": footnotes(results),
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def write_chart(path: Path, results: Results, title: str) -> None:
    """Left: jetkit's advantage per baseline (log scale). Right: jetkit against its limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = build_rows(results)
    compared = [r for r in rows if r.ratio is not None]
    limits = [(r, t) for r in rows for t, _, _ in r.targets if t.max_value is not None and r.jetkit]
    fig, (left, right) = plt.subplots(
        1,
        2,
        figsize=(15, max(5.0, 0.45 * len(compared) + 1.5)),
        gridspec_kw={"width_ratios": [3, 1]},
        layout="constrained",
    )
    labels, values, colours = [], [], []
    for r in compared:
        assert r.ratio is not None
        adv = r.ratio if r.metric.higher_is_better else 1 / r.ratio
        labels.append(
            textwrap.fill(f"{r.metric.scenario}: {r.metric.label}", 48) + f"\nvs {r.baseline}"
        )
        values.append(adv)
        colours.append("#2e8b57" if adv >= 1 else "#c0392b")
    ys = list(range(len(values)))[::-1]
    left.barh(ys, values, color=colours)
    left.set_xscale("log")
    left.axvline(1.0, color="black", linewidth=0.8)
    for y, r in zip(ys, compared, strict=True):
        for t, _, _ in r.targets:
            if t.min_ratio is not None:
                left.plot([t.min_ratio], [y], marker="|", markersize=18, color="navy")
    for y, v in zip(ys, values, strict=True):
        left.text(v, y, f" {v:.2f}x", va="center", fontsize=7)
    left.set_yticks(ys)
    left.set_yticklabels(labels, fontsize=7)
    left.set_xlabel("jetkit advantage (median; >1 = jetkit better; | = target)")
    left.set_title("jetkit vs baselines")
    if limits:
        names = [textwrap.fill(f"{r.metric.scenario}: {r.metric.label}", 26) for r, _ in limits]
        share = [(r.jetkit or 0) / (t.max_value or 1) for r, t in limits]
        yl = list(range(len(share)))[::-1]
        right.barh(yl, share, color=["#2e8b57" if s <= 1 else "#c0392b" for s in share])
        right.axvline(1.0, color="navy", linewidth=1)
        for y, s, (r, _) in zip(yl, share, limits, strict=True):
            right.text(
                s, y, f" {fmt(r.jetkit, r.metric.unit)} {r.metric.unit}", va="center", fontsize=7
            )
        right.set_yticks(yl)
        right.set_yticklabels(names, fontsize=7)
        right.set_xlabel("jetkit median / limit (<= 1 = met)")
        right.set_title("absolute targets")
    else:
        right.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
