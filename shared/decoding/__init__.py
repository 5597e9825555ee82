"""Greedy, beam search and sampling with a KV cache (search.py); CTC decoding (ctc.py)."""
from shared.decoding.ctc import ctc_greedy, ctc_prefix_beam_search
from shared.decoding.search import LLMDecoder, beam_search, generate, greedy, prefill, sample, warp_logits

__all__ = ["ctc_greedy", "ctc_prefix_beam_search", "LLMDecoder", "beam_search", "generate", "greedy", "prefill",
           "sample", "warp_logits"]
