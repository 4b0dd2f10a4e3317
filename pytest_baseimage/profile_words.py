"""Types in words, and the annotation helpers they read: for the schema's one-line errors and the generated
profile reference (docs/profiles.md). Nothing here knows the profile's models."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo


def key_path(loc: tuple[Any, ...]) -> str:
    """('os', 'accept', 0, 'verison') -> os.accept[0].verison; pydantic's union member tags are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not is_tag(str(part)):
            out += f".{part}" if out else str(part)
    return out


def own_check_text(loc: tuple[Any, ...], message: str) -> str:
    """A model's own check's message at the key it names first ("command: required ..." raised by the table at
    `loc` reads "scoring.command: required ..."); else at `loc` itself."""
    key, sep, rest = message.partition(": ")
    if sep and re.fullmatch(r"[a-z_.]+", key):
        return f"{key_path((*loc, *key.split('.')))}: {rest}"
    path = key_path(loc)
    return f"{path}: {message}" if path else message


def is_tag(part: str) -> bool:
    return part.startswith(("list[", "literal[", "function-")) or part in ("str", "int", "bool", "float", "none")


def declared(field: FieldInfo) -> Any:
    """A field's annotation with its validators and constraints (pydantic keeps them apart)."""
    return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


def strip(annotation: Any) -> Any:
    """Annotated[...] and Optional[...] -> the type inside."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union:
            inner = [a for a in get_args(annotation) if a is not type(None)]
            models = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
            annotation = models[0] if models else inner[0]
        else:
            return annotation


def inner_model(annotation: Any) -> type[BaseModel] | None:
    stripped = strip(annotation)
    return stripped if isinstance(stripped, type) and issubclass(stripped, BaseModel) else None


def element(annotation: Any) -> Any:
    """list[X] -> X, dict[str, X] -> X (X keeps its validators)."""
    args = get_args(strip(annotation))
    return args[-1] if args else None


# -- types in words: for error messages and the generated reference ---------------------------------------
def type_text(annotation: Any) -> str:
    """'list of strings', 'integer 1 to 65535', 'one of "none", "bridge"' ... from the JSON schema."""
    schema = TypeAdapter(annotation).json_schema(mode="validation")
    return _words(schema, plural=False)


PLURALS = {"string": "strings", "integer": "integers", "number": "numbers", "table": "tables", "boolean": "booleans"}


def _words(schema: dict[str, Any], plural: bool) -> str:
    if "$ref" in schema or (schema.get("type") == "object" and "properties" in schema):
        return "tables" if plural else "table"
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        if len(options) == 2 and options[1] == {"type": "array", "items": options[0]}:  # one, or a list of them
            return f"{_words(options[0], plural)}, or a list of them"
        return " or ".join(dict.fromkeys(_words(s, plural) for s in options))
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        return json.dumps(values[0]) if len(values) == 1 else "one of " + ", ".join(json.dumps(v) for v in values)
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items", {})
        if "anyOf" in items:
            each = " or ".join(_words(option, plural=False) for option in items["anyOf"])
            return f"list{'s' if plural else ''} of entries, each a {each}"
        return f"list{'s' if plural else ''} of {_words(items, plural=True)}"
    if kind == "object":
        inner = _words(schema.get("additionalProperties", {}), plural=False)
        return f"table{'s' if plural else ''} of name = {inner}"
    if kind in ("integer", "number"):
        word = PLURALS[kind] if plural else kind
        return word + _range(schema)
    if kind in ("string", "boolean"):
        word = kind if kind != "boolean" else "true/false"
        return PLURALS.get(word, word) if plural else word
    return "any TOML value"


def _range(schema: dict[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f" {low:g} to {high:g}"
    if schema.get("exclusiveMinimum") is not None:
        return f" > {schema['exclusiveMinimum']:g}"
    if low is not None:
        return f" >= {low:g}"
    return ""


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
