"""Flax Linen layers shared by every system; every parameter carries logical axes."""
