"""UniCUE in JAX/Flax: cued-speech recognition (pose-aware visual processor, semantic alignment pool,
MBart decoder) unified with video-to-speech latent diffusion (VisioPhonetic adapter, DDPM).

See papers/unicue.txt; built from `shared` parts.
"""
