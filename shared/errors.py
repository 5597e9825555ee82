"""User-facing errors. Each names the file / key / shape at fault and what was expected.

Raise these (not bare ValueError/KeyError) wherever a person's input is wrong: a config key,
a data file, a checkpoint. Callers may catch `StackError` to catch them all.
"""
from __future__ import annotations


class StackError(Exception):
  """Base of every user-facing error in this project."""


class ConfigError(StackError, ValueError):
  """A configuration value or key is invalid: names the key and what was expected."""


class DataError(StackError, ValueError):
  """A data file or sample is unusable: names the file (and key/shape) and what was wrong."""

  def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
    self.path = path
    self.key = key
    where = []
    if path is not None:
      where.append(f"file {path!s}")
    if key is not None:
      where.append(f"key {key!r}")
    super().__init__(f"{message} ({', '.join(where)})" if where else message)


class CheckpointError(StackError, ValueError):
  """A checkpoint or weight file does not match what the model expects: names the keys/shapes."""
