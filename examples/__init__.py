"""Small complete jobs on the shared trainer, outside `shared/` (which holds no system).

    python -m examples.sort --config configs/demo/tiny.py --workdir DIR      # a Transformer learns to sort
    python -m examples.csr --config configs/demo/csr_tiny.py --workdir DIR   # SynthCue cued speech, CTC

`examples.sort` is the trainer's test fixture (sharding, resume, frozen masks, NaN guard on a CPU-sized
model); `examples.csr` is the trainer's SynthCue learning check (tests/shared/test_learning_csr.py).
"""
