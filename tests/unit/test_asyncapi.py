"""``jetkit asyncapi``: the AsyncAPI 3.0 document of a jk.App, its shape checked here
without a server (the AsyncAPI parser's verdict: tests/test_asyncapi_parser.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import asyncapi_examples as ex
import jetkit as jk
from jetkit._asyncapi import asyncapi_document
from jetkit._jsonschema import describe, draft7

TESTS = Path(__file__).resolve().parent.parent  # tests/


def document(app: jk.App) -> dict[str, Any]:
    doc = asyncapi_document(app, title="t", version="1.0.0")
    json.dumps(doc)  # JSON-ready: no Python objects left in it
    return doc


def resolve(doc: dict[str, Any], ref: str) -> Any:
    """What ``ref`` points at, following a reference to a reference."""
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if isinstance(node, dict) and list(node) == ["$ref"]:
        return resolve(doc, node["$ref"])
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def payload(doc: dict[str, Any], channel: str, message: str) -> Any:
    return resolve(doc, f"#/channels/{channel}/messages/{message}")["payload"]


@pytest.mark.parametrize("name", sorted(ex.APPS))
def test_every_reference_resolves_and_operations_use_their_channels_messages(name: str) -> None:
    doc = document(ex.APPS[name])
    assert doc["asyncapi"] == "3.0.0"
    for ref in refs(doc):
        resolve(doc, ref)
    for op in doc["operations"].values():
        assert op["action"] in ("send", "receive")
        channel = op["channel"]["$ref"]
        for message in op["messages"]:
            assert message["$ref"].startswith(channel + "/messages/")
        if "reply" in op:
            reply = op["reply"]["channel"]["$ref"]
            for message in op["reply"]["messages"]:
                assert message["$ref"].startswith(reply + "/messages/")
    for key in [*doc["channels"], *doc["operations"], *doc["servers"]]:
        assert key.replace("_", "").replace("-", "").isalnum(), key


def test_a_stored_app() -> None:
    doc = document(ex.stored)
    assert doc["info"] == {"title": "t", "version": "1.0.0"}
    (server,) = doc["servers"].values()
    assert server["host"] == "127.0.0.1:{port}" and server["protocol"] == "nats"
    assert server["variables"]["port"]["default"] == "4222"
    assert doc["components"]["securitySchemes"]["userPassword"]["type"] == "userPassword"
    channels = {c["address"]: c for c in doc["channels"].values()}
    assert {"orders.events", "orders.>", "audit.*.done", "failed.orders", "prices.quote"} <= set(
        channels
    )
    assert channels["orders.events"]["description"].startswith("Stored (JetStream)")
    assert "wildcard" in channels["orders.>"]["description"]

    bill = doc["operations"]["bill"]
    assert bill["action"] == "receive" and bill["channel"]["$ref"] == "#/channels/orders_events"
    assert bill["summary"] == "Bill an order."
    assert bill["x-jetkit"] == {
        "durable": "billing",
        "ack": "manual",
        "max_deliver": 3,
        "backoff": [1.0, 5.0],
        "dlq": "failed.orders",
    }
    assert "Charges the customer once per order." in bill["description"]
    assert "Durable consumer 'billing'" in bill["description"]
    assert "then it goes to 'failed.orders'" in bill["description"]
    assert "bindings" not in bill  # a durable, not a NATS queue group
    assert payload(doc, "orders_events", "Order") == {"$ref": "#/components/schemas/Order"}

    letters = doc["operations"]["bill_dead_letters"]
    assert letters["action"] == "send" and letters["channel"]["$ref"] == "#/channels/failed_orders"
    letter = resolve(doc, doc["channels"]["failed_orders"]["messages"]["OrderDeadLetter"]["$ref"])
    assert letter["payload"] == {"$ref": "#/components/schemas/Order"}
    assert {"Jetkit-Error", "Jetkit-Deliveries"} <= set(letter["headers"]["properties"])

    watch = doc["operations"]["watch"]
    group = watch["x-jetkit"]["queue_group"]  # the App named it after the handler
    assert watch["bindings"]["nats"] == {"queue": group, "bindingVersion": "0.1.0"}
    union = payload(doc, "orders_all", "Shipped_Cancelled")
    assert union["discriminator"] == "type"  # AsyncAPI's form: the property's name
    assert {s["$ref"] for s in union["anyOf"]} == {
        "#/components/schemas/Shipped",
        "#/components/schemas/Cancelled",
    }
    assert doc["components"]["schemas"]["Audit"]["required"] == ["action", "actor", "at"]


def test_a_responder_replies_to_the_requesters_inbox() -> None:
    doc = document(ex.stored)
    quote = doc["operations"]["quote"]
    assert quote["channel"]["$ref"] == "#/channels/prices_quote"
    assert "8 requests at once" in quote["description"]
    assert quote["x-jetkit"]["concurrency"] == 8
    inbox = resolve(doc, quote["reply"]["channel"]["$ref"])
    assert inbox["address"] is None and "reply subject" in inbox["description"]
    answers = [resolve(doc, m["$ref"]) for m in quote["reply"]["messages"]]
    assert answers[0]["payload"] == {"$ref": "#/components/schemas/Quote"}
    assert answers[1]["headers"]["required"] == ["Jetkit-Error"]
    asked = resolve(doc, quote["messages"][0]["$ref"])
    assert asked["contentType"] == "text/plain" and asked["payload"] == {"type": "string"}


def test_raw_payloads_and_reply_annotations() -> None:
    doc = document(ex.core)
    messages = doc["components"]["messages"]
    assert messages["Bytes"]["payload"] == {"type": "string", "format": "binary"}
    assert messages["Bytes"]["contentType"] == "application/octet-stream"
    ops = doc["operations"]
    assert "not decoded" in ops["raw"]["description"]
    assert "the jk.Message" in ops["whole"]["description"]
    assert ops["whole"]["messages"][0]["$ref"].endswith("/Bytes")
    assert ops["reading"]["messages"][0]["$ref"].endswith("/Text")
    assert ops["reading"]["bindings"]["nats"]["queue"] == "readers"
    assert payload(doc, "loose_json", "dict_str_Any") == {"type": "object"}

    def reply(op: str) -> dict[str, Any]:
        return resolve(doc, ops[op]["reply"]["messages"][0]["$ref"])

    assert reply("echo")["name"] == "Text"
    assert reply("ping")["payload"] == {"type": "string", "maxLength": 0}
    assert "returns None" in ops["ping"]["description"]
    assert reply("lookup")["payload"] == {"$ref": "#/components/schemas/Order"}
    assert "empty when it returns None" in ops["lookup"]["description"]
    assert "payload" not in reply("anything") and "not annotated" in ops["anything"]["description"]


def test_core_topics_and_what_the_app_cannot_tell() -> None:
    doc = document(ex.core)
    assert doc["info"]["title"] == "t"
    assert doc["servers"]["embedded"]["host"] == "127.0.0.1:4333"
    assert "variables" not in doc["servers"]["embedded"]
    channels = {c["address"]: c for c in doc["channels"].values()}
    assert channels["raw.bytes"]["description"].startswith("Core NATS (not stored")
    assert channels["echo.text"]["description"].startswith("Requests and replies go over core")
    # AsyncAPI reads {x} in an address as a parameter: such a topic has none, said instead
    (odd,) = [c for c in doc["channels"].values() if "odd.{braces}" in c["description"]]
    assert odd["address"] is None

    app = jk.App()  # core by default: a durable needs a topic declared JetStream

    @app.subscriber("jobs", durable="worker", ack=jk.AckPolicy.MANUAL)
    async def work(data: bytes) -> None: ...

    (jobs,) = document(app)["channels"].values()
    assert jobs["description"].startswith("Stored (JetStream): its subscriber's options")
    assert "durable, ack" in jobs["description"]


def test_pydantic_models_and_names_made_unique() -> None:
    doc = document(ex.shop)
    schemas = doc["components"]["schemas"]
    # the dataclass Order and a pydantic model also named Order
    assert payload(doc, "orders_plain", "Order") == {"$ref": "#/components/schemas/Order"}
    assert payload(doc, "orders_modelled", "Order_2") == {"$ref": "#/components/schemas/Order_2"}
    assert set(schemas["Order"]["properties"]) == {"order_id", "amount", "lines"}
    assert set(schemas["Order_2"]["properties"]) == {"order_id", "note"}
    # nested models are components of their own
    cart = schemas["Cart"]
    assert cart["properties"]["lines"]["items"] == {"$ref": "#/components/schemas/Line"}
    assert cart["description"] == "A customer's cart."
    assert cart["properties"]["discriminator"]["type"] == "string"  # a property, kept
    pet = schemas["Pet"]["properties"]["pet"]
    assert pet["discriminator"] == "kind"
    # what a handler takes (validation) and what a responder returns (serialization)
    assert "euros" not in schemas["Receipt-Input"]["properties"]
    assert "euros" in schemas["Receipt-Output"]["properties"]
    (receipt,) = [
        resolve(doc, m["$ref"])
        for m in doc["operations"]["checkout"]["reply"]["messages"]
        if "Receipt" in m["$ref"]
    ]
    assert receipt["payload"] == {"$ref": "#/components/schemas/Receipt-Output"}
    lines = resolve(doc, doc["operations"]["lines"]["reply"]["messages"][0]["$ref"])
    assert lines["payload"] == {"type": "array", "items": {"$ref": "#/components/schemas/Line"}}


def test_external_servers_keep_their_credentials_out() -> None:
    doc = document(ex.shop)
    assert "hunter2" not in json.dumps(doc) and "shop:" not in json.dumps(doc)
    one, two = doc["servers"].values()
    assert one["host"] == "nats-1.internal:4222" and one["protocol"] == "nats"
    assert one["security"] == [{"$ref": "#/components/securitySchemes/userPassword"}]
    assert two["host"] == "nats-2.internal:4222" and two["description"] == "Over TLS."
    doc = document(ex.empty)
    assert doc["channels"] == {} and doc["operations"] == {}
    assert "s3cret" not in json.dumps(doc)
    for server in doc["servers"].values():
        assert server["security"] == [{"$ref": "#/components/securitySchemes/token"}]
    assert doc["components"]["securitySchemes"]["token"]["type"] == "apiKey"


def test_server_addresses() -> None:
    def hosts(**options: Any) -> list[tuple[str, str]]:
        servers = document(jk.App(**options))["servers"].values()
        return [(s["host"], s["protocol"]) for s in servers]

    assert hosts(host="::1", port=4999) == [("[::1]:4999", "nats")]
    assert hosts(servers=["h1", "nats://[fe80::1]:5222", "wss://u:p@edge.example"]) == [
        ("h1:4222", "nats"),
        ("[fe80::1]:5222", "nats"),
        ("edge.example", "wss"),
    ]


def test_a_handler_used_twice_is_two_operations() -> None:
    doc = document(ex.twice)
    assert set(doc["operations"]) == {"bill", "bill_2"}
    assert [o["channel"]["$ref"] for o in doc["operations"].values()] == [
        "#/channels/a_events",
        "#/channels/b_events",
    ]


def test_schemas_are_draft_07_and_a_type_without_one_is_said() -> None:
    assert draft7({"type": "array", "prefixItems": [{"type": "integer"}], "items": False}) == {
        "type": "array",
        "items": [{"type": "integer"}],
        "additionalItems": False,
    }
    # data (default, enum) is not read as schema keywords
    data = {"default": {"prefixItems": [1]}, "enum": [{"discriminator": {"a": 1}}]}
    assert draft7(data) == data

    found, components = describe([(Opaque, True), (Fine, True)])
    assert found == [None, {"$ref": "#/components/schemas/Fine"}]
    assert set(components) == {"Fine"}

    app = jk.App()

    @app.responder("opaque")
    async def opaque(data: bytes) -> Opaque:
        return Opaque()

    doc = document(app)
    (answer, _) = doc["operations"]["opaque"]["reply"]["messages"]
    message = resolve(doc, answer["$ref"])
    assert "payload" not in message and "cannot describe Opaque" in message["description"]


class Opaque:
    """Neither msgspec nor pydantic can describe it."""


@dataclasses.dataclass
class Fine:
    x: int


def test_the_document_starts_nothing_and_leaves_the_app_as_it_was() -> None:
    before = ex.stored.subscribers, ex.stored.options
    document(ex.stored)
    assert (ex.stored.subscribers, ex.stored.options) == before
    with pytest.raises(jk.StreamClosedError):
        ex.stored.stream  # noqa: B018


# -- the command ------------------------------------------------------------------------


def jetkit(*args: str, cwd: Path = TESTS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jetkit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        timeout=60,
        check=False,
    )


def test_the_command_prints_json_and_yaml() -> None:
    out = jetkit("asyncapi", "asyncapi_examples:stored")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["info"]["title"] == "asyncapi_examples:stored"
    assert doc["info"]["version"] == "2.5.0"  # the module's __version__
    assert doc["info"]["description"].startswith("Example Apps whose AsyncAPI documents")
    assert doc == document_of(ex.stored, doc["info"])
    out = jetkit("asyncapi", "asyncapi_examples:stored", "--yaml")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("asyncapi: 3.0.0\n")
    assert yaml.safe_load(out.stdout) == doc
    named = json.loads(jetkit("asyncapi", "asyncapi_examples:core").stdout)
    assert named["info"]["title"] == "edge-gateway"  # the App's connection name


def document_of(app: jk.App, info: dict[str, Any]) -> dict[str, Any]:
    return asyncapi_document(
        app, title=info["title"], version=info["version"], description=info["description"]
    )


def test_the_command_imports_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(
        "import jetkit as jk\napp = jk.App()\n\n"
        "@app.subscriber('greetings')\nasync def greet(name: str) -> None: ...\n"
    )
    script = Path(sys.executable).parent / "jetkit"  # not `python -m`: no cwd on sys.path
    if not script.exists():
        pytest.skip(f"no jetkit script beside {sys.executable}")
    out = subprocess.run(
        [str(script), "asyncapi", "service:app"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["info"] == {"title": "service", "version": "0.0.0"}
    assert [c["address"] for c in doc["channels"].values()] == ["greetings"]


@pytest.mark.parametrize(
    ("ref", "said"),
    [
        ("asyncapi_examples", "expected MODULE:APP (e.g. service:app), got 'asyncapi_examples'"),
        ("no_such_module:app", "no module named 'no_such_module' (looked in the current"),
        ("asyncapi_examples.nope:app", "no module named 'asyncapi_examples.nope'"),
        ("asyncapi_examples:nope", "module 'asyncapi_examples' has no attribute 'nope' (its"),
        ("asyncapi_examples:not_an_app", "asyncapi_examples:not_an_app is an instance of Order,"),
        ("asyncapi_examples:Order", "asyncapi_examples:Order is the class Order, not a jk.App"),
        ("asyncapi_examples:jk", "asyncapi_examples:jk is a module, not a jk.App"),
        ("asyncapi_examples:stored.subscriber", "asyncapi_examples:stored.subscriber is a func"),
        ("broken:app", "importing 'broken' failed: ConfigError: store_dir is empty"),
        ("needs_more:app", "importing 'needs_more' failed: No module named 'not_installed_x'"),
    ],
)
def test_a_bad_module_app_is_one_line_and_exit_code_2(ref: str, said: str, tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import jetkit as jk\napp = jk.App(store_dir='')\n")
    (tmp_path / "needs_more.py").write_text("import not_installed_x\n")
    out = jetkit("asyncapi", ref, cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"error: {said}"), out.stderr
