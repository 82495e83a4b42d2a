"""``jetkit top``'s view of a live Stream: two samples, the rates between them, a table
that fits 80 columns. (The command itself: tests/tools/test_cli.py; its pure helpers:
tests/unit/test_tool_helpers.py.)"""

from __future__ import annotations

from rich.console import Console

import jetkit as jk
from conftest import wait_until_async
from jetkit import _top


async def test_top_view_fits_80_columns_and_keeps_names_whole(js: jk.Stream, topic: str) -> None:
    long_topic = f"{topic}.with.a.rather.long.name.that.cannot.fit.in.its.column"
    durable = "a-durable-name-long-enough-to-wrap-inside-eighty-columns"
    await js.publish_many(long_topic, [b"x" * 100] * 20)

    async def ignore(data: bytes) -> None:
        pass

    await js.subscribe(long_topic, ignore, durable=durable, start_at=jk.StartAt.ALL)
    top = _top.Top()
    top.add(await _top.sample(js))
    await js.publish_many(long_topic, [b"y"] * 30)  # the rate between the two samples

    async def acked() -> bool:
        return (await js.consumer_info(long_topic, durable)).ack_floor == 50

    await wait_until_async(acked)
    top.add(await _top.sample(js))

    console = Console(width=80, record=True, force_terminal=True, color_system=None)
    console.print(_top.view(top, 80))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    cells = "".join(line.split("│")[1].strip() for line in lines if line.startswith("│"))
    assert long_topic in cells  # pieces joined again: broken only at token ends
    # the consumers table's second column, found below its title: with many consumers on
    # the session's server the table may leave its sparkline column out (fewer "│")
    below = lines[[line.split() for line in lines].index(["consumers"]) :]
    consumer_cells = "".join(line.split("│")[2].strip() for line in below if line.startswith("│"))
    assert durable in consumer_cells
    # every piece of the wrapped name ends at a separator (or is the name's end); the
    # pieces are found as the run of rows that spells it (other tests' topics are listed
    # too, and a piece of theirs may occur inside this name)
    cells_1 = [line.split("│")[1].strip() for line in lines if line.count("│") >= 6]
    pieces = [piece for piece in cells_1 if piece]
    runs = []
    for start in range(len(pieces)):
        joined, run = "", []
        for piece in pieces[start:]:
            if not long_topic.startswith(joined + piece):
                break
            joined, run = joined + piece, [*run, piece]
            if joined == long_topic:
                runs.append(run)
                break
    assert runs, "the long topic's wrapped pieces were not found"
    for piece in runs[0][:-1]:
        assert piece.endswith((".", "-", "_")), piece

    rows = {r[0]: r for r in top.topic_rows(human=False)}
    assert rows[long_topic][1:3] == ["50", str((await js.topic_info(long_topic)).bytes)]
    assert float(rows[long_topic][3]) > 0  # published between the samples
    consumers = {(r[0], r[1]): r for r in top.consumer_rows(human=False)}
    assert consumers[(long_topic, durable)][2:5] == ["0", "0", "0"]
    assert float(consumers[(long_topic, durable)][5]) > 0
    plain = list(_top.plain(top))
    assert plain[0].split("\t") == ["topic", "messages", "bytes", "msg/s"]
    assert any(line.startswith(f"{long_topic}\t50\t") for line in plain)
