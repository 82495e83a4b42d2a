"""The ``jetkit`` command line: the demo, a foreground server, and inspection tools.

Every connecting command reaches NATS through ``--store-dir`` (attach to the jetkit
server serving that store, or start one on it for the duration of the command) or
``--server URL`` (an external NATS, with ``--user/--password`` or ``--token``); see
``jetkit._tools.Target``. Every error is one line on stderr, ``error: ...``, exit code 2.

The package: ``app`` (the typer app, the order of the commands, ``main``), ``common``
(connection options, running, signals), ``output`` (terminal vs pipe), and the
commands by kind: ``servers`` (demo, server, cluster, ui, examples), ``inspection``
(topics, topic, consumers, top), ``messages`` (pub, cancel, sub, dlq; ``dlq`` selects
and shows the letters). What the console shares with it is ``jetkit._tools``.
"""

from .._tools import Target
from .app import app, main
from .common import DEFAULT_TARGET, connected

__all__ = ["DEFAULT_TARGET", "Target", "app", "connected", "main"]
