"""UniTalking in JAX/Flax: an MM-DiT with joint audio-video attention trained with flow matching,
generating speech and lip-synced video together (Wan2.2 video branch, audio twin)."""
