"""A tiny, complete job for the trainer: a Transformer that learns to sort token sequences.

It exists to exercise `shared.train` end to end (sharding, resume, frozen masks, NaN guard) with a
model small enough for a CPU test; the systems' own jobs follow the same shape.
"""
