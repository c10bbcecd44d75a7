"""Programme configuration as data: a TOML file per service read into a pydantic model."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def load_toml(model: type[M], default_file: Path, env_var: str,
              path: str | Path | None = None) -> M:
    """`model` read from `path`, else from the file `env_var` names, else from `default_file`.
    Raises pydantic.ValidationError for a file of the wrong shape, OSError when it cannot be
    read and tomllib.TOMLDecodeError when it is not TOML."""
    chosen = Path(path or os.environ.get(env_var) or default_file)
    with chosen.open("rb") as f:
        return model.model_validate(tomllib.load(f))
