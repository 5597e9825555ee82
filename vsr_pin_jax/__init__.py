"""VALLR-Pin in JAX/Flax: Mandarin lip reading with character and pinyin decoders (CTC + CE), N-best
beam search, then a LoRA-adapted Qwen3 that corrects homophone errors."""
