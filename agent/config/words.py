"""What config errors say: pydantic's validation errors reworded for a field technician.

This module owns the wording of every config message that comes from validation: the dotted
path (`devices[0].points[1].type`), what is wrong, what is allowed (the values of an enum, the
range of a number, the characters of a name), and a "did you mean" for misspelt keys, enum
values, drivers, buses and profiles. A value that came from `${VAR}` is shown as written, never
as its (possibly secret) value. Positions come from `agent.config.yaml.Converter`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel

from agent.config.mqtt import TOPIC_PREFIX_PATTERN
from agent.config.yaml import Converter, Issue, Loc, Pos, dotted
from agent.core.configbase import NAME_PATTERN
from agent.core.units import parse_duration

PATTERNS = {
    NAME_PATTERN: "use letters, digits, '_', '.', '-', starting with a letter or digit",
    TOPIC_PREFIX_PATTERN: "use topic levels of letters, digits, '_', '.', '-' separated by "
    "'/'; no wildcards (+, #), no leading or trailing '/'",
}
_TYPES = {"int": "a whole number", "float": "a number", "bool": "true or false",
          "string": "text", "dict": "a mapping", "model": "a mapping", "list": "a list",
          "tuple": "a list", "model_attributes": "a mapping"}


def get(data: Any, loc: Loc) -> Any:
    """The value at `loc`, or None."""
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def show(value: Any) -> str:
    """A value as a message quotes it: 'text', 300, 1.5, true, a mapping."""
    kinds = {type(None): "an empty value", dict: "a mapping", list: "a list"}
    if type(value) in kinds or isinstance(value, bool):
        return kinds.get(type(value)) or str(value).lower()
    return f"{value:g}" if isinstance(value, float) else repr(value)


def suggest(word: Any, options: list[str]) -> str:
    """" (did you mean 'x'?)" for the closest option, or ""."""
    close = difflib.get_close_matches(word, options, n=1) if isinstance(word, str) else []
    return f" (did you mean '{close[0]}'?)" if close else ""


def where(loc: Loc, conv: Converter) -> Pos:
    """Where the value at `loc` (or its nearest existing parent) is in the files."""
    return next((conv.value_pos[loc[:n]] for n in range(len(loc), -1, -1)
                 if loc[:n] in conv.value_pos), (1, 1))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = {m for a in get_args(annotation) if (m := _model_in(a)) is not None}
    return found.pop() if len(found) == 1 else None


def _walk(root: type[BaseModel], tags: Mapping[str, type[BaseModel]], loc: Any
          ) -> tuple[type[BaseModel] | None, Any]:
    """For a pydantic error loc: the model of the mapping it ends in, and the last field."""
    model: type[BaseModel] | None = root
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        if part in tags and (model is None or part not in model.model_fields):
            model, field = tags[part], None  # the union's tag
        elif model is not None and part in model.model_fields:
            field = model.model_fields[part]
            model = _model_in(field.annotation)
        else:
            return None, None
    return model, field


def _literals(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [v for a in get_args(annotation) for v in _literals(a)]


def _bounds(field: Any) -> str:
    unit = " s" if any(getattr(m, "func", None) is parse_duration for m in field.metadata) else ""
    words = {Ge: ("at least", "ge"), Gt: ("more than", "gt"), Le: ("at most", "le"),
             Lt: ("less than", "lt")}
    found = {type(m): f"{getattr(m, words[type(m)][1]):g}{unit}" for m in field.metadata
             if type(m) in words}
    if Ge in found and Le in found:
        return f"allowed {found[Ge]} to {found[Le]}"
    return "allowed " + " and ".join(f"{words[k][0]} {v}" for k, v in found.items())


def describe(err: Any, loc: Loc, data: Any, conv: Converter, root: type[BaseModel],
             tags: Mapping[str, type[BaseModel]]) -> list[Issue]:
    """One pydantic error as an issue: the dotted path, what is wrong, what is allowed.
    `root` is the model validated, `tags` the device models by their `driver` tag."""
    found = _describe(err, loc, data, conv, root, tags)
    written = conv.substituted.get(loc)
    if written is None:
        return found
    value = str(get(data, loc))  # from the environment: quote the reference, not the value
    return [(pos, msg.replace(repr(value), repr(written)).replace(value, written))
            for pos, msg in found]


def _describe(err: Any, loc: Loc, data: Any, conv: Converter, root: type[BaseModel],
              tags: Mapping[str, type[BaseModel]]) -> list[Issue]:
    kind, ctx, raw, path = err["type"], err.get("ctx", {}), get(data, loc), dotted(loc)
    here, message = loc, f"{path}: {err['msg'].removeprefix('Value error, ')}"
    field = _walk(root, tags, err["loc"])[1]
    if kind == "missing":
        here, message = loc[:-1], f"{dotted(loc[:-1])}: missing required key '{loc[-1]}'"
    elif kind == "extra_forbidden":
        model = _walk(root, tags, err["loc"][:-1])[0]
        names = list(model.model_fields) if model else []
        hint = suggest(loc[-1], names) or (f"; allowed keys: {', '.join(names)}" if names else "")
        return [(conv.key_pos.get(loc) or where(loc, conv), f"{path}: unknown key{hint}")]
    elif kind == "union_tag_invalid":
        drv, known = get(data, (*loc, "driver")), list(tags)
        here, message = (*loc, "driver"), (f"{path}.driver: {show(drv)} is not a known driver; "
                                           f"known: {', '.join(known)}{suggest(drv, known)}")
    elif kind == "union_tag_not_found" and isinstance(raw, dict):
        message = f"{path}: missing required key 'driver' (one of {', '.join(tags)})"
    elif kind == "union_tag_not_found":
        message = f"{path}: expected a mapping (a device), got {show(raw)}"
    elif kind == "literal_error":
        words = [str(v) for v in _literals(field.annotation)] if field else [ctx["expected"]]
        message = (f"{path}: {show(raw)} is not allowed; expected one of {', '.join(words)}"
                   f"{suggest(raw, words)}")
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        shown = show(raw) + (f" (= {err['input']:g} s)" if isinstance(raw, str) else "")
        message = f"{path}: {shown} is out of range; {_bounds(field) if field else err['msg']}"
    elif kind == "string_pattern_mismatch":
        rule = PATTERNS.get(ctx["pattern"], f"must match {ctx['pattern']}")
        message = f"{path}: {show(raw)} is not allowed; {rule}"
    elif kind == "string_too_short":
        message = f"{path}: must not be empty"
    elif kind == "string_too_long":
        message = f"{path}: too long; at most {ctx['max_length']} characters"
    elif kind == "too_short":
        if isinstance(raw, list) and len(raw) >= ctx["min_length"]:
            return []  # only a consequence of invalid items, which are reported themselves
        message = f"{path}: needs at least {ctx['min_length']} item(s)"
    elif (base := kind.removesuffix("_type").removesuffix("_parsing")) in _TYPES or (
            base := base.removesuffix("_from_float")) in _TYPES:
        message = f"{path}: expected {_TYPES[base]}, got {show(raw)}"
    return [(where(here, conv), message)]
