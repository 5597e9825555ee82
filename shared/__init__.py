"""The shared core of the audio-visual speech stack.

config   trainer / mesh / data fields every system shares, with validation
mesh     device mesh from config, logical-axis rules -> shardings, multi-host start
train    the one training loop: TrainState, sharded jit, checkpoints, metrics, preemption
errors   typed user-facing errors (ConfigError, DataError, CheckpointError)
nn       Flax Linen layers with logical-axis annotations
kernels  attention / convolution implementations and the dispatcher that picks one
models   pretrained model families (LLaMA/Qwen3, MBart, Whisper, UMT5, Wan, VAEs, vocoders)
weights  load_pretrained / save_pretrained: two-way PyTorch/HF weight conversion
diffusion, decoding, data, text, metrics: see each subpackage's docstring
"""
