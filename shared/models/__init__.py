"""Pretrained model families in Flax (LLaMA/Qwen3, MBart, Whisper, UMT5, Wan, VAEs, vocoders)."""
