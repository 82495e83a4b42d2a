"""Example Apps whose AsyncAPI documents the tests check (tests/test_asyncapi.py) and
give to the AsyncAPI project's parser (tests/test_asyncapi_parser.py).

Importing this module starts nothing: an App only records its handlers.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal, TypedDict

import msgspec
import pydantic

import jetkit as jk

__version__ = "2.5.0"


# -- payload types ------------------------------------------------------------------------


@dataclasses.dataclass
class Order:
    order_id: str
    amount: float
    lines: tuple[str, int] = ("", 0)  # a tuple: draft 2020-12's prefixItems in msgspec


@dataclasses.dataclass
class Quote:
    sku: str
    price: float


class Shipped(msgspec.Struct, tag=True):
    order_id: str
    carrier: str


class Cancelled(msgspec.Struct, tag=True):
    order_id: str
    reason: str = ""


class Audit(TypedDict):
    actor: str
    action: str
    at: float


class Line(pydantic.BaseModel):
    sku: str
    quantity: int = 1


class Cart(pydantic.BaseModel):
    """A customer's cart."""

    cart_id: str
    lines: list[Line]
    discriminator: str = ""  # a property named like a keyword stays a property
    prefixItems: int = 0


class Cat(pydantic.BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(pydantic.BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(pydantic.BaseModel):
    pet: Cat | Dog = pydantic.Field(discriminator="kind")


class Receipt(pydantic.BaseModel):
    """What a checkout returns: its total is computed (only in the serialized form)."""

    cart_id: str
    cents: int

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def euros(self) -> float:
        return self.cents / 100


def _pydantic_order() -> type[pydantic.BaseModel]:
    class Order(pydantic.BaseModel):  # the name of the dataclass Order above
        order_id: str
        note: str = ""

    return Order


PydanticOrder = _pydantic_order()


# -- a stored (JetStream) app -------------------------------------------------------------

stored = jk.App(store_dir="./jetstream-store", default_mode=jk.TopicMode.JETSTREAM)


@stored.subscriber(
    "orders.events",
    durable="billing",
    ack=jk.AckPolicy.MANUAL,
    max_deliver=3,
    backoff=[1, 5],
    dlq="failed.orders",
)
async def bill(order: Order, msg: jk.Message) -> None:
    """Bill an order.

    Charges the customer once per order."""


@stored.subscriber("orders.>", concurrency=4)
async def watch(event: Shipped | Cancelled) -> None:
    """Every order event, whatever its kind."""


@stored.subscriber("audit.*.done", key="Actor", ack=jk.AckPolicy.MANUAL)
async def audit(entry: Audit) -> None: ...


@stored.responder("prices.quote", concurrency=8)
async def quote(sku: str) -> Quote:
    return Quote(sku, 9.99)


# -- a core app: raw payloads, requests ----------------------------------------------------

core = jk.App(port=4333, name="edge-gateway")


@core.subscriber("raw.bytes")
async def raw(data: bytes) -> None: ...


@core.subscriber("raw.message")
async def whole(msg: jk.Message) -> None: ...


@core.subscriber("sensors.*.reading", queue_group="readers")
def reading(text: str) -> None: ...


@core.subscriber("loose.json")
async def loose(data: dict[str, typing.Any]) -> None: ...


@core.subscriber("odd.{braces}")
async def odd(data: bytes) -> None: ...


@core.responder("echo.text")
async def echo(text: str) -> str:
    return text


@core.responder("ping")
async def ping(data: bytes) -> None: ...


@core.responder("lookup")
async def lookup(order_id: str) -> Order | None:
    return None


@core.responder("anything")
async def anything(data: bytes):  # type: ignore[no-untyped-def]
    return data


# -- pydantic models ----------------------------------------------------------------------

shop = jk.App(servers=["nats://shop:hunter2@nats-1.internal:4222", "tls://nats-2.internal"])


@shop.subscriber("carts.updated", durable="carts", ack=jk.AckPolicy.MANUAL, dlq="carts.dead")
async def cart_updated(cart: Cart) -> None: ...


@shop.subscriber("pets.adopted")
async def adopted(pet: Pet) -> None: ...


@shop.subscriber("orders.plain")
async def plain_order(order: Order) -> None: ...


@shop.subscriber("orders.modelled")
async def modelled_order(order: PydanticOrder) -> None:  # type: ignore[valid-type]
    ...


@shop.subscriber("receipts.issued")
async def file_receipt(receipt: Receipt) -> None: ...


@shop.responder("carts.checkout")
async def checkout(cart: Cart) -> Receipt:
    return Receipt(cart_id=cart.cart_id, cents=100)


@shop.responder("carts.lines")
async def lines(cart: Cart) -> list[Line]:
    return cart.lines


# -- nothing declared; the same handler twice ---------------------------------------------

empty = jk.App(servers=["nats://127.0.0.1:4222", "wss://edge.example"], token="s3cret-token")

twice = jk.App(default_mode="jetstream")
twice.subscriber("a.events")(bill)
twice.subscriber("b.events")(bill)

not_an_app = Order("x", 1.0)

APPS = {"stored": stored, "core": core, "shop": shop, "empty": empty, "twice": twice}
