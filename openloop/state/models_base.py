"""Shared pydantic plumbing for the files OpenLoop reads and writes.

Files use camelCase keys (the original tool's format); Python code uses snake_case attributes.
OpenLoop's own state files keep unknown keys (`extra="allow"`) so a file written by a newer
version survives a rewrite. Files a person writes by hand and whose keys decide what OpenLoop may
do (project.json, and policy.yaml with its own models) refuse them: there a misspelled key would
silently drop a rule.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer
from pydantic.alias_generators import to_camel

from openloop.errors import ConfigError

M = TypeVar("M", bound="FileModel")


class FileModel(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        alias_generator=to_camel,
        populate_by_name=True,
        validate_assignment=True,
        # Build validators on first use: a CLI call touches only a few of the models, and
        # building all of them up front dominated start-up.
        defer_build=True,
    )

    def to_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class StrictFileModel(FileModel):
    """A hand-written settings file: unknown keys and values of the wrong type are errors (`true`
    is not a number of seconds, "5" is not an int), never ignored or coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # Fields the original tool wrote that OpenLoop carries but never acts on: written back only
    # when the file had them, so a new file does not grow keys that look like live settings.
    legacy_fields: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _drop_absent_legacy(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self.legacy_fields:
                field = type(self).model_fields[name]
                for key in (field.alias, name):
                    if key in data and data[key] is None:
                        del data[key]
        return data


def _unwrap(tp: Any) -> Any:
    """The model, dict or list type inside Optional[...] / Annotated[...]."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin is Union or origin is types.UnionType:
            options = [a for a in get_args(tp) if a is not type(None)]
            if len(options) != 1:
                return tp
            tp = options[0]
        else:
            return tp


def known_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys the mapping at `loc` accepts (empty when loc leads to no model)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = tp.model_fields
            name = next((n for n, f in fields.items() if part in (n, f.alias)), None)
            if name is None:
                return []
            tp = fields[name].annotation
        elif origin is dict:
            tp = get_args(tp)[1]  # part is the entry's key
        elif origin is list:
            tp = get_args(tp)[0]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def unknown_key_message(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    """'unknown key', with the closest key the file could have meant when one is close."""
    key = str(loc[-1]) if loc else ""
    import difflib  # only for an error message

    close = difflib.get_close_matches(key, known_keys(model, loc[:-1]), n=1)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"


def describe_validation_error(
    source: Path | str, exc: ValidationError, model: type[BaseModel] | None = None
) -> str:
    """One line naming the file, the field and the problem (the first error; others follow)."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first.get("type") == "literal_error" or first.get("type") == "enum":
        msg = f"{msg}, got {first.get('input')!r}"
    elif first.get("type") == "extra_forbidden" and model is not None:
        msg = unknown_key_message(model, first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def validate(model: type[M], data: Any, source: Path | str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc, model)) from None


def file_version(data: dict[str, Any], current: int, source: Path | str) -> int:
    """The file's format version (absent means 1, the original tool's); refuse newer ones."""
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"{source}: version: expected a positive integer, got {version!r}")
    if version > current:
        raise ConfigError(
            f"{source}: version: {version} is newer than this OpenLoop understands ({current}); "
            "upgrade OpenLoop"
        )
    return version
