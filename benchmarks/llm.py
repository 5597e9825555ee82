"""Forward+backward time of a small LLaMA-style LLM: ours (JAX, jitted) vs transformers (PyTorch), same CPU.

  python benchmarks/llm.py [--layers 4 --hidden 256 --batch 4 --length 128 --steps 5 --dtype float32]
Prints JSON lines: one per implementation ({"impl", "ms_per_step", ...}) and a summary with
"ratio" = ours / transformers (below 1: ours is faster). Weights are the same (imported from the torch model).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--layers", type=int, default=4)
  ap.add_argument("--hidden", type=int, default=256)
  ap.add_argument("--heads", type=int, default=8)
  ap.add_argument("--kv-heads", type=int, default=4)
  ap.add_argument("--vocab", type=int, default=4096)
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--length", type=int, default=128)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--remat", default="none")
  ap.add_argument("--dtype", default="float32", help="compute dtype of ours (torch runs fp32)")
  args = ap.parse_args()

  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  from shared.weights import load_pretrained

  torch.manual_seed(0)
  cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                    num_hidden_layers=args.layers, num_attention_heads=args.heads,
                    num_key_value_heads=args.kv_heads)
  model = LlamaForCausalLM(cfg)
  model.train()
  ids_np = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.length))
  ids = torch.from_numpy(ids_np)

  def torch_step():
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.loss.item()

  torch_step()
  t0 = time.perf_counter()
  for _ in range(args.steps):
    torch_step()
  torch_ms = (time.perf_counter() - t0) / args.steps * 1e3

  with tempfile.TemporaryDirectory() as d:
    model.save_pretrained(d)
    module, params = load_pretrained(d, dtype=jnp.float32, remat_policy=args.remat, compute_dtype=args.dtype)

  x = jnp.asarray(ids_np)

  @jax.jit
  def step(p):
    def loss(p):
      logits = module.apply({"params": p}, x)[:, :-1]  # same work as transformers' labels=ids loss
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), x[:, 1:, None], -1))
    return jax.value_and_grad(loss)(p)

  t0 = time.perf_counter()
  jax.block_until_ready(step(params))
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(args.steps):
    jax.block_until_ready(step(params))
  ours_ms = (time.perf_counter() - t0) / args.steps * 1e3

  shape = {"layers": args.layers, "hidden": args.hidden, "batch": args.batch, "length": args.length,
           "vocab": args.vocab, "threads": torch.get_num_threads(), "backend": jax.default_backend()}
  print(json.dumps({"bench": "llm_fwd_bwd", "impl": "transformers", "ms_per_step": round(torch_ms, 2), **shape}))
  print(json.dumps({"bench": "llm_fwd_bwd", "impl": "ours", "ms_per_step": round(ours_ms, 2),
                    "compile_s": round(compile_s, 2), "dtype": args.dtype, "remat": args.remat, **shape}))
  print(json.dumps({"bench": "llm_fwd_bwd", "ratio_ours_over_transformers": round(ours_ms / torch_ms, 3), **shape}))


if __name__ == "__main__":
  main()
