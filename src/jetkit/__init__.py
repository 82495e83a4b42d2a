"""jetkit: durable messaging with zero infrastructure.

``Stream.open()`` starts a real NATS server with JetStream on loopback (or connects
to an external NATS) and gives a typed asyncio API for pub/sub, queue groups,
request/reply and durable JetStream consumers.
"""

from ._app import App
from ._deadletters import DeadLetter, DeadLetterScan, RedriveResult
from ._emit import Emit
from ._errors import (
    AlreadySettledError,
    ConfigError,
    ConnectionError,
    ConnectionLostError,
    DamagedConsumerError,
    DecodeError,
    DependencyError,
    EncodeError,
    ForkedStreamError,
    HandlerSignatureError,
    IncompatibleConsumerError,
    InsecureStoreError,
    InvalidHeaderError,
    InvalidTopicError,
    JetkitError,
    JetStreamError,
    NoRespondersError,
    NotADeadLetterTopicError,
    NotFoundError,
    PayloadTooLargeError,
    PortInUseError,
    PublishBatchError,
    RemoteError,
    ServerBinaryError,
    ServerStartError,
    ServerTimeoutError,
    StorageFullError,
    StoreNotWritableError,
    StreamClosedError,
    StreamUnhealthyError,
    TimeoutError,
    UnknownOptionError,
)
from ._info import ConsumerInfo, ReplicaInfo, TopicInfo, TopicOverview
from ._message import Message
from ._publish import PubAck
from ._retry import exponential_backoff
from ._schedule import ScheduledMessage
from ._stream import Stream
from ._subscription import AckPolicy, Backpressure, StartAt, Subscription, SubscriptionStats
from ._surface import OpenOptions, SubscribeOptions
from ._topics import Discard, Retention, TopicMode

__version__ = "0.1.0"

__all__ = [
    "AckPolicy",
    "AlreadySettledError",
    "App",
    "Backpressure",
    "ConfigError",
    "ConnectionError",
    "ConnectionLostError",
    "ConsumerInfo",
    "DamagedConsumerError",
    "DeadLetter",
    "DeadLetterScan",
    "DecodeError",
    "DependencyError",
    "Discard",
    "Emit",
    "EncodeError",
    "ForkedStreamError",
    "HandlerSignatureError",
    "IncompatibleConsumerError",
    "InsecureStoreError",
    "InvalidHeaderError",
    "InvalidTopicError",
    "JetStreamError",
    "JetkitError",
    "Message",
    "NoRespondersError",
    "NotADeadLetterTopicError",
    "NotFoundError",
    "OpenOptions",
    "PayloadTooLargeError",
    "PortInUseError",
    "PubAck",
    "PublishBatchError",
    "RedriveResult",
    "RemoteError",
    "ReplicaInfo",
    "Retention",
    "ScheduledMessage",
    "ServerBinaryError",
    "ServerStartError",
    "ServerTimeoutError",
    "StartAt",
    "StorageFullError",
    "StoreNotWritableError",
    "Stream",
    "StreamClosedError",
    "StreamUnhealthyError",
    "SubscribeOptions",
    "Subscription",
    "SubscriptionStats",
    "TimeoutError",
    "TopicInfo",
    "TopicMode",
    "TopicOverview",
    "UnknownOptionError",
    "__version__",
    "exponential_backoff",
]


def __getattr__(name: str) -> object:
    # ``jk.metrics`` without importing prometheus-client with every ``import jetkit``
    if name == "metrics":
        import importlib

        return importlib.import_module(".metrics", __name__)
    raise AttributeError(f"module 'jetkit' has no attribute {name!r}")
