"""CLI for the two-way weight conversion.

  python -m shared.weights inspect HF_DIR
  python -m shared.weights import HF_DIR OUT_DIR [--adapter PEFT_DIR] [--dtype bfloat16]
      -> OUT_DIR/config.json (+ adapter_config.json) and OUT_DIR/params (orbax checkpoint of the params tree)
  python -m shared.weights export OUT_DIR HF_DIR [--lora merge|drop] [--adapter-out PEFT_DIR]
      [--max-shard-size 5GB] [--dtype bfloat16]
      -> a directory transformers/diffusers/peft load with from_pretrained
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import jax.numpy as jnp


def _restore(src: str):
  import orbax.checkpoint as ocp
  from shared import weights
  from shared.weights import io
  cfg = io.read_json(os.path.join(src, "config.json"))
  module = weights.family_for_config(cfg, src).from_config(cfg)
  if os.path.exists(os.path.join(src, "adapter_config.json")):
    from shared.nn.lora import LoraConfig
    a = io.read_json(os.path.join(src, "adapter_config.json"))
    module = module.clone(config=module.config.replace(lora=LoraConfig(
        a["r"], a["lora_alpha"], a.get("lora_dropout", 0.0), tuple(a["target_modules"]), a.get("use_rslora", False))))
  params = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(src, "params")))
  return module, params


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m shared.weights", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = ap.add_subparsers(dest="cmd", required=True)
  p = sub.add_parser("inspect")
  p.add_argument("src")
  p = sub.add_parser("import")
  p.add_argument("src")
  p.add_argument("out")
  p.add_argument("--adapter")
  p.add_argument("--dtype", default="float32")
  p = sub.add_parser("export")
  p.add_argument("src")
  p.add_argument("out")
  p.add_argument("--lora", default="merge", choices=("merge", "drop"))
  p.add_argument("--adapter-out")
  p.add_argument("--max-shard-size", default="5GB")
  p.add_argument("--dtype")
  args = ap.parse_args(argv)

  from shared import weights
  from shared.weights import io
  if args.cmd == "inspect":
    module, params = weights.load_pretrained(args.src)
    print(type(module).__name__, module.config)
    for k, v in sorted(weights.abstract_params(module).items()):
      print("/".join(k), v)
    return 0
  if args.cmd == "import":
    import orbax.checkpoint as ocp
    module, params = weights.load_pretrained(args.src, dtype=jnp.dtype(args.dtype))
    if args.adapter:
      module, params = weights.load_adapter(module, params, args.adapter, dtype=jnp.dtype(args.dtype))
    os.makedirs(args.out, exist_ok=True)
    fam = weights.family_for_module(module)
    io.write_json(os.path.join(args.out, "config.json"), fam.to_config(module))
    if args.adapter:
      shutil.copy(os.path.join(args.adapter, "adapter_config.json"), os.path.join(args.out, "adapter_config.json"))
    ckpt = os.path.abspath(os.path.join(args.out, "params"))
    if os.path.exists(ckpt):
      shutil.rmtree(ckpt)
    c = ocp.StandardCheckpointer()
    c.save(ckpt, params)
    c.wait_until_finished()
    print(f"imported {args.src} -> {args.out}")
    return 0
  module, params = _restore(args.src)
  dtype = jnp.dtype(args.dtype) if args.dtype else None
  weights.save_pretrained(module, params, args.out, lora=args.lora, dtype=dtype, max_shard_size=args.max_shard_size)
  if args.adapter_out:
    weights.save_adapter(module, params, args.adapter_out, base_model_name_or_path=None, dtype=dtype)
  print(f"exported {args.src} -> {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
