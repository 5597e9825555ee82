"""Greedy, beam search and sampling with a KV cache; CTC decoding."""
