"""Greedy, beam search, joint attention + CTC beam search and sampling with a KV cache (search.py); CTC decoding
(ctc.py) and the vectorised CTC prefix scorer (ctc_prefix.py)."""
from shared.decoding.ctc import ctc_greedy, ctc_prefix_beam_search
from shared.decoding.search import (LLMDecoder, beam_search, generate, greedy, joint_ctc_beam_search, prefill, sample,
                                    warp_logits)

__all__ = ["ctc_greedy", "ctc_prefix_beam_search", "LLMDecoder", "beam_search", "generate", "greedy",
           "joint_ctc_beam_search", "prefill", "sample", "warp_logits"]
