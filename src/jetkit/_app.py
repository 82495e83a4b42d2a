"""``jk.App``: a messaging service whose handlers are declared at import time.

::

    app = jk.App(store_dir="./jetstream-store", default_mode=jk.TopicMode.JETSTREAM)

    @app.subscriber("orders.events", durable="billing", ack=jk.AckPolicy.MANUAL)
    async def bill(order: Order) -> None: ...

    if __name__ == "__main__":
        app.run()

The decorators check their topic, handler and options at once (jk.ConfigError at
import, not at start) and only record them. ``serve()`` opens the Stream, runs the
``on_startup`` hooks (they may declare topics), registers every subscriber and
responder, and yields the Stream; leaving it runs the ``on_shutdown`` hooks and closes
the Stream with ``hand_back=True``: handlers already running finish and ack within
``drain_timeout``, messages pulled and not started go back to the server at once.
``run()`` does that until SIGTERM or SIGINT (a second one stops at once: what was in a
handler is redelivered later, never lost); ``lifespan`` does it for an ASGI app.

Once per app, however many processes run it (``jetkit run --workers N``): a subscriber
without ``durable`` or ``queue_group`` gets a queue group named after its handler, so
the processes share its messages (core topics: a NATS queue group; JetStream: one
consumer of that name); durable subscribers share their durable; a responder without a
queue group gets one named after its handler too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import importlib
import inspect
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar, Unpack

from ._codec import plan_batch_handler, plan_handler
from ._errors import ConfigError, StreamClosedError
from ._options import open_options, subscribe_options
from ._stream import Stream
from ._surface import OpenOptions, SubscribeOptions
from ._topics import validate_topic
from ._validate import number

F = TypeVar("F", bound=Callable[..., Any])
Hook = Callable[[Stream], Awaitable[None] | None]

MAX_GROUP = 64  # a queue group named after a handler, at most this long


@dataclasses.dataclass(frozen=True)
class SubscriberSpec:
    """A subscriber an App declared: what ``@app.subscriber`` was given."""

    topic: str
    handler: Callable[..., Any]
    options: SubscribeOptions


@dataclasses.dataclass(frozen=True)
class ResponderSpec:
    """A responder an App declared: what ``@app.responder`` was given."""

    topic: str
    handler: Callable[..., Any]
    queue_group: str
    concurrency: int


def group_name(handler: Callable[..., Any]) -> str:
    """The queue group of a handler declared without one: its module and name, as a
    consumer name can hold them (``orders.service.bill`` -> ``orders_service_bill``);
    a long one keeps its end (the handler's name) behind a hash of the whole, so two
    never share a group."""
    target: Any = handler
    while isinstance(target, functools.partial):  # what a partial calls
        target = target.func
    if not hasattr(target, "__qualname__"):  # a callable object: its class
        target = type(target)
    where = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", where).strip("_") or "handler"
    if len(name) > MAX_GROUP:
        digest = hashlib.blake2b(where.encode(), digest_size=4).hexdigest()
        name = f"{digest}_{name[-(MAX_GROUP - 9) :].lstrip('_')}"
    return name


class App:
    """A messaging service: ``Stream.open``'s options, handlers declared with decorators,
    run by ``run()``, ``serve()``, ``lifespan`` (ASGI) or ``jetkit run MODULE:APP``."""

    def __init__(self, **options: Unpack[OpenOptions]) -> None:
        open_options(**options)  # checked now: a bad option fails at import
        self._options = options
        self._subscribers: list[SubscriberSpec] = []
        self._responders: list[ResponderSpec] = []
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._stream: Stream | None = None

    # -- declaring ---------------------------------------------------------------------

    def subscriber(self, topic: str, **options: Unpack[SubscribeOptions]) -> Callable[[F], F]:
        """Declare a subscriber (``Stream.subscribe``'s options); it is subscribed when
        the app starts. Without ``durable`` or ``queue_group`` it is in a queue group
        named after the handler (each message handled once per app)."""
        validate_topic(topic, wildcards=True)
        subscribe_options(topic, **options)  # the options' own checks, now

        def decorate(handler: F) -> F:
            # a handler jetkit cannot call fails here
            batched = options.get("batch") is not None
            plan_batch_handler(handler) if batched else plan_handler(handler)
            given: SubscribeOptions = {**options}
            if given.get("durable") is None and given.get("queue_group") is None:
                given["queue_group"] = group_name(handler)
            self._subscribers.append(SubscriberSpec(topic, handler, given))
            return handler

        return decorate

    def responder(
        self, topic: str, *, queue_group: str | None = None, concurrency: int = 1
    ) -> Callable[[F], F]:
        """Declare a responder (``Stream.respond``): its return value is the reply. It is
        in a queue group named after the handler unless ``queue_group`` is given."""
        validate_topic(topic, wildcards=True)
        number("concurrency", concurrency, minimum=1, maximum=10_000, integer=True)

        def decorate(handler: F) -> F:
            plan_handler(handler)
            group = queue_group if queue_group is not None else group_name(handler)
            self._responders.append(ResponderSpec(topic, handler, group, concurrency))
            return handler

        return decorate

    def on_startup(self, hook: F) -> F:
        """Run ``hook(stream)`` (a function or coroutine function) once the Stream is
        open, before the subscribers are registered: e.g. to declare topics."""
        self._startup.append(_hook(hook, "on_startup"))
        return hook

    def on_shutdown(self, hook: F) -> F:
        """Run ``hook(stream)`` when the app stops, before the Stream closes (it is
        still open)."""
        self._shutdown.append(_hook(hook, "on_shutdown"))
        return hook

    @property
    def subscribers(self) -> tuple[SubscriberSpec, ...]:
        """The subscribers declared, in order."""
        return tuple(self._subscribers)

    @property
    def responders(self) -> tuple[ResponderSpec, ...]:
        """The responders declared, in order."""
        return tuple(self._responders)

    @property
    def options(self) -> OpenOptions:
        """The ``Stream.open`` options the app was made with."""
        return self._options.copy()

    # -- running -----------------------------------------------------------------------

    @property
    def stream(self) -> Stream:
        """The open Stream while the app runs (jk.StreamClosedError otherwise)."""
        if self._stream is None:
            raise StreamClosedError(
                "the app is not running: app.stream exists inside app.serve(), app.run(), "
                "app.lifespan or `jetkit run`"
            )
        return self._stream

    @contextlib.asynccontextmanager
    async def serve(self, **overrides: Unpack[OpenOptions]) -> AsyncIterator[Stream]:
        """Run the app for the block: open the Stream (the app's options, with
        ``overrides``), run the startup hooks, register every subscriber and responder,
        then yield the Stream. On leaving: the shutdown hooks, then
        ``close(hand_back=True)``."""
        if self._stream is not None:
            raise ConfigError("this app is running already; serve it once at a time")
        options = self._options.copy()
        options.update(overrides)
        async with Stream.open(**options) as stream:
            self._stream = stream
            try:
                for hook in self._startup:
                    await _call(hook, stream)
                for sub in self._subscribers:
                    await stream.subscribe(sub.topic, sub.handler, **sub.options)
                for resp in self._responders:
                    await stream.respond(
                        resp.topic, resp.handler, resp.queue_group, concurrency=resp.concurrency
                    )
                yield stream
            finally:
                try:
                    for hook in reversed(self._shutdown):
                        await _call(hook, stream)
                finally:
                    self._stream = None
                    await stream.close(hand_back=True)

    @contextlib.asynccontextmanager
    async def lifespan(self, asgi_app: object = None) -> AsyncIterator[None]:
        """An ASGI lifespan: ``FastAPI(lifespan=app.lifespan)``,
        ``Starlette(lifespan=app.lifespan)``. The app runs while the web app does;
        ``app.stream`` is its Stream (e.g. to publish from a route)."""
        async with self.serve():
            yield

    def run(self, **overrides: Unpack[OpenOptions]) -> None:
        """Serve the app until SIGTERM or SIGINT (Ctrl+C), then stop gracefully: running
        handlers finish and ack within ``drain_timeout``, the rest goes back to the
        server. A second signal stops at once (what was in a handler is redelivered
        later). Blocks; for ``python service.py``."""
        asyncio.run(self.run_until_stopped(**overrides))

    async def run_until_stopped(
        self, *, ready: Callable[[], None] | None = None, **overrides: Unpack[OpenOptions]
    ) -> None:
        """``run()`` inside a running event loop; ``ready()`` is called once every
        subscriber and responder is registered (``jetkit run`` reports readiness so). A
        signal while the app is still starting (a startup hook may wait) stops the start."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        running: list[Stream] = []  # the app's Stream once started, also while it closes
        signals = 0
        interrupted = False

        async def body() -> None:
            async with self.serve(**overrides) as stream:
                running.append(stream)
                if ready is not None:
                    ready()
                await stop.wait()

        task = asyncio.ensure_future(body())

        def on_signal() -> None:
            nonlocal signals, interrupted
            signals += 1
            if not running:  # still starting: stop that (serve closes what it opened)
                interrupted = True
                task.cancel()
            elif signals == 1:
                stop.set()
            else:
                running[0]._hurry_close()  # the close under way stops at once

        handled = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal)
                handled.append(sig)
        try:
            await task
        except asyncio.CancelledError:
            if (
                not interrupted
                or (current := asyncio.current_task()) is None
                or (current.cancelling())
            ):
                raise
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)


def _hook(hook: Callable[..., Any], what: str) -> Hook:
    if not callable(hook):
        raise ConfigError(f"{what} takes a function of the Stream, got {hook!r}")
    try:
        inspect.signature(hook).bind(None)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what} hook {getattr(hook, '__qualname__', hook)!r} must take one argument, "
            f"the Stream ({exc})"
        ) from None
    return hook


async def _call(hook: Hook, stream: Stream) -> None:
    result = hook(stream)
    if inspect.isawaitable(result):
        await result


def find_app(ref: str) -> tuple[ModuleType, App]:
    """The module and the ``jk.App`` named ``MODULE:APP`` (``jetkit run``'s and ``jetkit
    asyncapi``'s argument; ``APP`` may be dotted), imported from ``sys.path`` (the callers
    put the current directory first); a one-sentence jk.ConfigError otherwise."""
    name, colon, attribute = ref.partition(":")
    if not colon or not name or not attribute:
        raise ConfigError(f"expected MODULE:APP (e.g. service:app), got {ref!r}")
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise ConfigError(
                f"no module named {name!r} (looked in the current directory, {os.getcwd()}, "
                "and in the installed packages)"
            ) from None
        raise ConfigError(f"importing {name!r} failed: {exc}") from None
    except Exception as exc:  # the module itself raised as it was imported
        raise ConfigError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from None
    found: object = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            apps = [k for k, v in vars(module).items() if isinstance(v, App)]
            hint = f" (its jk.App: {', '.join(map(repr, apps))})" if apps else ""
            raise ConfigError(f"module {name!r} has no attribute {attribute!r}{hint}")
        found = getattr(found, part)
    if not isinstance(found, App):
        raise ConfigError(f"{ref} is {_kind(found)}, not a jk.App")
    return module, found


def load_app(ref: str) -> App:
    """The ``jk.App`` named ``MODULE:APP`` (see ``find_app``)."""
    return find_app(ref)[1]


def _kind(thing: object) -> str:
    if inspect.ismodule(thing):
        return "a module"
    if inspect.isclass(thing):
        return f"the class {thing.__name__}"
    if inspect.isroutine(thing):
        return "a function"
    return f"an instance of {type(thing).__name__}"
