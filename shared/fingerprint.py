"""Fingerprints of files: what a prepared dataset or feature directory records of the codec / encoder that made
it, so a later run can tell whether it is the same one (unitalking_jax.latents, trimodal_jax.extract)."""
from __future__ import annotations

import hashlib


def file_sha256(path: str) -> str:
  """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()
