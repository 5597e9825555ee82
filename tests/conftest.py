"""Test set-up: 8 simulated CPU devices (before JAX is imported), fast compiles, float32 matmuls, no network."""
import os

from tests.xla_env import xla_flags

os.environ.setdefault("XLA_FLAGS", xla_flags(8))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")



from shared.torch_compat import import_torchvision  # noqa: E402

import_torchvision()   # before transformers / diffusers (a CUDA-built torchvision would break them)

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
