"""Every error jetkit raises.

JetkitError
 ├── ServerStartError                 the embedded nats-server could not start
 │    ├── ServerBinaryError            binary missing or too old
 │    ├── PortInUseError               the requested port is taken
 │    ├── StoreNotWritableError        store_dir cannot be written
 │    ├── InsecureStoreError           store_dir is writable by other users
 │    └── ServerTimeoutError           not ready within server_ready_timeout
 ├── ConnectionError                   talking to NATS failed
 │    ├── StreamClosedError            the Stream was closed
 │    │    └── ForkedStreamError       used in a process forked from the one that opened it
 │    ├── ConnectionLostError          dropped before the server answered
 │    └── StreamUnhealthyError         healthy() found a problem
 ├── InvalidTopicError (ValueError)    a topic name is not allowed
 ├── InvalidHeaderError (ValueError)   a header name/value or msg_id is not allowed
 ├── PayloadTooLargeError (ValueError) message (headers + payload) over max_payload
 ├── NotADeadLetterTopicError (ValueError) no dead letter where one is needed
 ├── ConfigError (ValueError)          an option or combination is not allowed
 │    ├── IncompatibleConsumerError    an existing durable differs in a fixed field
 │    └── UnknownOptionError (TypeError) an option the call does not have
 ├── HandlerSignatureError (TypeError) a handler jetkit cannot call
 ├── DecodeError (ValueError)          payload does not decode to the handler's type
 ├── EncodeError (TypeError)           value cannot be encoded as JSON
 ├── TimeoutError (builtin TimeoutError)
 ├── NoRespondersError                 a request found nobody listening
 ├── RemoteError                       a responder raised; carries its type and message
 ├── AlreadySettledError               ack/nak/term on a message already settled
 ├── PublishBatchError                 some publishes of publish_many() failed
 ├── DependencyError                   an installed nats-py is not one jetkit works with
 └── JetStreamError                    the JetStream API refused a call
      ├── NotFoundError                topic (stream) or consumer does not exist
      ├── StorageFullError             the store's disk (or JetStream's share) is full
      └── DamagedConsumerError         a durable's state on disk cannot be loaded
"""

from __future__ import annotations

import builtins
from typing import Any

# the header that carries an error: a responder's (request/reply) or a dead letter's last
ERROR_HEADER = "Jetkit-Error"

__all__ = [
    "AlreadySettledError",
    "ConfigError",
    "ConnectionError",
    "ConnectionLostError",
    "DamagedConsumerError",
    "DecodeError",
    "DependencyError",
    "EncodeError",
    "ForkedStreamError",
    "HandlerSignatureError",
    "IncompatibleConsumerError",
    "InsecureStoreError",
    "InvalidHeaderError",
    "InvalidTopicError",
    "JetStreamError",
    "JetkitError",
    "NoRespondersError",
    "NotADeadLetterTopicError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PortInUseError",
    "PublishBatchError",
    "RemoteError",
    "ServerBinaryError",
    "ServerStartError",
    "ServerTimeoutError",
    "StorageFullError",
    "StoreNotWritableError",
    "StreamClosedError",
    "StreamUnhealthyError",
    "TimeoutError",
    "UnknownOptionError",
]


class JetkitError(Exception):
    """Root of every error raised by jetkit."""


class ServerStartError(JetkitError):
    """The embedded nats-server could not be started."""


class ServerBinaryError(ServerStartError):
    """The nats-server binary is missing or older than jetkit supports."""


class PortInUseError(ServerStartError):
    """The port asked for is already taken by another process."""


class StoreNotWritableError(ServerStartError):
    """The store directory cannot be created or written."""


class InsecureStoreError(ServerStartError):
    """The store directory is writable by other users (or owned by another user)."""


class ServerTimeoutError(ServerStartError):
    """The server did not report ready within ``server_ready_timeout``."""


class ConnectionError(JetkitError):
    """Talking to the NATS server failed (connect, lost connection, dead server)."""


class StreamClosedError(ConnectionError):
    """The Stream was closed; open a new one."""


class ForkedStreamError(StreamClosedError):
    """The Stream was opened in another process (this one was made by ``os.fork()``):
    its event loop, threads and server belong to that process; open a new Stream here."""


class ConnectionLostError(ConnectionError):
    """The connection dropped before the server answered: the call may or may not
    have taken effect (for a publish: repeat it with the same ``msg_id`` to be safe)."""


class StreamUnhealthyError(ConnectionError):
    """``Stream.healthy()`` found the server, connection or JetStream not working."""


class InvalidTopicError(JetkitError, ValueError):
    """A topic name NATS would reject, or a wildcard where one is not allowed."""


class InvalidHeaderError(JetkitError, ValueError):
    """A header name or value (or ``msg_id``) NATS cannot carry: not a str, or CR/LF in it."""


class PayloadTooLargeError(JetkitError, ValueError):
    """A message (headers plus payload) larger than the server's ``max_payload``."""


class NotADeadLetterTopicError(JetkitError, ValueError):
    """No dead letter where one is needed: ``redrive()`` on a topic whose messages carry
    no dead-letter headers, or ``discard_dead_letter()`` on a message that is not one."""


class DependencyError(JetkitError):
    """An installed dependency (nats-py) is not a version jetkit works with; the message
    names the version found, the versions supported, and how to install one."""


class ConfigError(JetkitError, ValueError):
    """An option, or a combination of options, that jetkit cannot honour."""


class UnknownOptionError(ConfigError, TypeError):
    """A keyword option the call does not have (a TypeError, as Python's own would be)."""


class IncompatibleConsumerError(ConfigError):
    """An existing durable consumer differs in a field that cannot change in place."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class HandlerSignatureError(JetkitError, builtins.TypeError):
    """A handler whose parameters jetkit cannot fill."""


class DecodeError(JetkitError, ValueError):
    """A payload that does not decode into the handler's declared type."""


class EncodeError(JetkitError, builtins.TypeError):
    """A value that cannot be encoded as JSON."""


class TimeoutError(JetkitError, builtins.TimeoutError):
    """An operation (request, acked publish, drain) did not finish in time."""


class NoRespondersError(JetkitError):
    """A request was sent to a topic nobody responds on."""


class RemoteError(JetkitError):
    """The responder raised; ``type`` and ``message`` describe its exception."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"responder raised {type}: {message}")
        self.type = type
        self.message = message


class AlreadySettledError(JetkitError):
    """ack/nak/term called on a message that was already settled."""


class JetStreamError(JetkitError):
    """The JetStream API refused a call; ``code`` and ``err_code`` are the server's."""

    def __init__(self, message: str, code: int = 0, err_code: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.err_code = err_code


class NotFoundError(JetStreamError):
    """The topic's stream or the consumer does not exist."""


class StorageFullError(JetStreamError):
    """The store is out of space: its disk is full or JetStream's storage limit is reached."""


class DamagedConsumerError(JetStreamError):
    """A durable consumer's state on disk is damaged and the server cannot load it."""


class PublishBatchError(JetkitError):
    """Some publishes of a batch failed; ``results`` holds a PubAck or exception per item."""

    def __init__(self, results: list[Any]) -> None:
        failed = [r for r in results if isinstance(r, BaseException)]
        super().__init__(f"{len(failed)} of {len(results)} publishes failed; first: {failed[0]!r}")
        self.results = results


def describe_error(exc: BaseException) -> str:
    """``"<ExceptionType>: <message>"`` on one line, at most 1,024 characters: how an
    exception travels in a header (a responder's error, a dead letter's cause)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:1024]


def one_line(text: str) -> str:
    """``text`` fit for a header value: one line, at most 1,024 characters."""
    return " ".join(text.split())[:1024]
