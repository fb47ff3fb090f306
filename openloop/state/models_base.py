"""Shared pydantic plumbing for the files OpenLoop reads and writes.

Files use camelCase keys (the original tool's format); Python code uses snake_case attributes.
Unknown keys are kept (`extra="allow"`) so a file written by a newer version survives a rewrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
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


def describe_validation_error(source: Path | str, exc: ValidationError) -> str:
    """One line naming the file, the field and the problem (the first error; others follow)."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first.get("type") == "literal_error" or first.get("type") == "enum":
        msg = f"{msg}, got {first.get('input')!r}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def validate(model: type[M], data: Any, source: Path | str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc)) from None


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
