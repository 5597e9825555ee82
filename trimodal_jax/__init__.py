"""Tri-modal sign / lip / audio to text in JAX/Flax: Video Swin sign encoder, AV-HuBERT lip encoder,
Whisper audio encoder, length adapters and a mapping network into a LoRA-adapted LLaMA decoder
(sign translation, lip reading, speech recognition, audio-visual ASR)."""
