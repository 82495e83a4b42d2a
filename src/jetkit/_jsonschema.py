"""JSON Schemas of the types handlers take and return (for ``jetkit asyncapi``).

msgspec describes what it decodes and encodes (dataclass, Struct, TypedDict, dict, list,
scalars); pydantic describes its models (``models_json_schema``: the validation schema of
what a handler takes, the serialization schema of what a responder returns). A pydantic
model inside a msgspec type (a reply of ``list[Model]``) is pydantic's to describe too.

``describe`` puts the named schemas of every type into one ``components`` section under
unique names: msgspec and pydantic each name a schema after its class (module-qualified
when two classes share a name); a name already taken by a different schema gets a
suffix (``Order_2``), an identical schema is shared. The schemas are written in JSON
Schema draft 07, which AsyncAPI's Schema Object extends, while msgspec and pydantic write
draft 2020-12: ``prefixItems`` (tuples) becomes ``items`` and ``additionalItems``, and an
OpenAPI discriminator object becomes the name of its property, AsyncAPI's form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

Schema = dict[str, Any]

COMPONENTS = "#/components/schemas/"
_LOCAL = "#/$defs/"  # where msgspec and pydantic point until the names are final
_NESTED = "#/$nested/"  # a pydantic model inside a msgspec type, until pydantic named it

# the keywords whose values are schemas (the rest, e.g. default or enum, are data)
_ONE = (
    "items",
    "additionalItems",
    "additionalProperties",
    "not",
    "contains",
    "propertyNames",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def is_pydantic(tp: Any) -> bool:
    """A pydantic (v2) model class: described by pydantic, not msgspec."""
    return isinstance(tp, type) and callable(getattr(tp, "model_json_schema", None))


def describe(
    wanted: Sequence[tuple[Any, bool]],
) -> tuple[list[Schema | None], dict[str, Schema]]:
    """The schema of each ``(type, writes)`` in ``wanted`` (``writes``: a value a
    responder returns rather than one a handler takes), pointing into the components
    returned beside them by ``#/components/schemas/NAME``; None for a type neither
    msgspec nor pydantic can describe."""
    components: dict[str, Schema] = {}
    found: list[Schema | None] = [None] * len(wanted)
    nested: list[type] = []

    def hook(tp: Any) -> Schema:
        if not is_pydantic(tp):
            raise NotImplementedError
        if tp not in nested:
            nested.append(tp)
        return {"$ref": f"{_NESTED}{nested.index(tp)}"}

    plain = [i for i, (tp, _) in enumerate(wanted) if not is_pydantic(tp)]
    for indexes, tops, defs in _msgspec_batches([wanted[i][0] for i in plain], hook):
        for i, top in zip(indexes, _merge(components, defs, tops), strict=True):
            found[plain[i]] = top
    pairs = [(tp, writes) for tp, writes in wanted if is_pydantic(tp)]
    pairs += [(tp, True) for tp in nested]  # only replies hold them: encoded by jetkit
    models: dict[tuple[type, bool], Schema | None] = {}
    for batch, tops, defs in _pydantic_batches(list(dict.fromkeys(pairs))):
        models.update(zip(batch, _merge(components, defs, tops), strict=True))
    for i, (tp, writes) in enumerate(wanted):
        if is_pydantic(tp):
            found[i] = models.get((tp, writes))

    def unnest(node: Schema) -> Schema:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_NESTED):
            return dict(models.get((nested[int(ref[len(_NESTED) :])], True)) or {})
        return node

    components = {name: draft7(map_schema(s, unnest)) for name, s in components.items()}
    return [None if s is None else draft7(map_schema(s, unnest)) for s in found], components


def _msgspec_batches(
    types: list[Any], hook: Callable[[Any], Schema]
) -> list[tuple[list[int], list[Schema], dict[str, Schema]]]:
    """msgspec's schemas of ``types``: all in one call, or, when one of them cannot be
    described, each on its own (leaving that one out)."""
    if not types:
        return []
    try:
        tops, defs = msgspec.json.schema_components(
            types, schema_hook=hook, ref_template=_LOCAL + "{name}"
        )
        return [(list(range(len(types))), list(tops), dict(defs))]
    except (TypeError, ValueError, NotImplementedError):
        pass
    batches = []
    for i, tp in enumerate(types):
        try:
            tops, defs = msgspec.json.schema_components(
                [tp], schema_hook=hook, ref_template=_LOCAL + "{name}"
            )
        except (TypeError, ValueError, NotImplementedError):
            continue
        batches.append(([i], list(tops), dict(defs)))
    return batches


def _pydantic_batches(
    pairs: list[tuple[type, bool]],
) -> list[tuple[list[tuple[type, bool]], list[Schema], dict[str, Schema]]]:
    """pydantic's schemas of the models in ``pairs``, as ``_msgspec_batches`` does."""
    if not pairs:
        return []
    from pydantic.json_schema import models_json_schema  # only with pydantic models

    def schemas(some: list[tuple[type, bool]]) -> tuple[list[Schema], dict[str, Schema]]:
        modes: list[Any] = [(tp, "serialization" if w else "validation") for tp, w in some]
        tops, whole = models_json_schema(modes, ref_template=_LOCAL + "{model}")
        return [dict(tops[m]) for m in modes], dict(whole.get("$defs", {}))

    try:
        return [(pairs, *schemas(pairs))]
    except Exception:  # pydantic's errors for a type it cannot describe vary
        pass
    batches = []
    for pair in pairs:
        try:
            batches.append(([pair], *schemas([pair])))
        except Exception:
            continue
    return batches


def _merge(
    components: dict[str, Schema], defs: dict[str, Schema], tops: list[Schema]
) -> list[Schema]:
    """Add ``defs`` (pointing at each other by ``#/$defs/NAME``) to ``components``,
    renaming a definition whose name is taken by a different schema; returns ``tops``
    pointing at the components."""
    taken = set(components)
    rename: dict[str, str] = {}
    for name in defs:
        clean = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        rename[name] = _unused(clean, taken) if clean in taken else clean
        taken.add(rename[name])
    changed = True
    while changed:  # a definition equal to the component of its name is that component
        changed = False
        for name, new in rename.items():
            clean = re.sub(r"[^A-Za-z0-9._-]", "_", name)
            if new != clean and components.get(clean) == _pointed(defs[name], rename):
                rename[name] = clean
                changed = True
    for name, schema in defs.items():
        components.setdefault(rename[name], _pointed(schema, rename))
    return [_pointed(top, rename) for top in tops]


def _unused(name: str, taken: set[str]) -> str:
    n = 2
    while f"{name}_{n}" in taken:
        n += 1
    return f"{name}_{n}"


def _pointed(schema: Schema, rename: dict[str, str]) -> Schema:
    def point(node: Schema) -> Schema:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_LOCAL):
            return {**node, "$ref": COMPONENTS + rename[ref[len(_LOCAL) :]]}
        return node

    pointed: Schema = map_schema(schema, point)
    return pointed


def map_schema(schema: Any, fn: Callable[[Schema], Schema]) -> Any:
    """A copy of ``schema`` with ``fn`` applied to it and to every schema inside it,
    innermost first (values that are data, such as ``default``, are left alone)."""
    if not isinstance(schema, dict):
        return schema  # true / false
    out: Schema = {}
    for key, value in schema.items():
        if key in _ONE and isinstance(value, dict | list):
            value = (
                [map_schema(v, fn) for v in value]
                if isinstance(value, list)
                else map_schema(value, fn)
            )
        elif key in _MANY and isinstance(value, list):
            value = [map_schema(v, fn) for v in value]
        elif key in _MAP and isinstance(value, dict):
            value = {k: map_schema(v, fn) for k, v in value.items()}
        out[key] = value
    return fn(out)


def draft7(schema: Schema) -> Schema:
    """``schema`` in draft 07's words, where AsyncAPI's differ from draft 2020-12's."""

    def words(node: Schema) -> Schema:
        if "prefixItems" in node:
            node = dict(node)
            rest = node.pop("items", None)
            node["items"] = node.pop("prefixItems")
            if rest is not None:
                node["additionalItems"] = rest
        discriminator = node.get("discriminator")
        if isinstance(discriminator, dict):
            node = {**node, "discriminator": discriminator.get("propertyName")}
        return node

    result: Schema = map_schema(schema, words)
    return result
