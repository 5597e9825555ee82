"""PyTorch-side import guard for the CPU torch build used here (and by anyone with a CPU torch).

torchvision 0.28 (the swin3d_t / resnet oracles; a test-only dependency) is published as a CUDA build: against
the CPU torch its import fails registering fake kernels for ops that do not exist ("torchvision::nms"), and
transformers / diffusers, which import torchvision themselves when it is installed, then fail to import their
models ("Could not import module 'PreTrainedModel'"). `import_torchvision()` imports it once with
torch.library.register_fake a no-op: its pure-Python models work; its compiled ops are never used.
Call it before importing transformers / diffusers models (tests/conftest.py and the torch_model modules do).
"""
from __future__ import annotations

_done = False


def import_torchvision() -> None:
  """Import torchvision (if installed) so that a CUDA-built wheel does not break transformers / diffusers."""
  global _done
  if _done:
    return
  _done = True
  try:
    import torch
  except ImportError:
    return
  real = torch.library.register_fake
  torch.library.register_fake = lambda *a, **k: (lambda fn: fn)
  try:
    import torchvision  # noqa: F401
  except Exception:   # not installed, or broken some other way: transformers then skips it
    pass
  finally:
    torch.library.register_fake = real
