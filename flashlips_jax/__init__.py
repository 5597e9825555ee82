"""FlashLips in JAX: a one-step latent lip-sync editor driven by 12-D lips-pose vectors, and an audio-to-lips-pose
flow-matching Transformer (see model.py)."""
