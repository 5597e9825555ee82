"""CLI for the two-way weight conversion.

  python -m shared.weights inspect HF_DIR
  python -m shared.weights import HF_DIR OUT_DIR [--adapter PEFT_DIR] [--dtype bfloat16]
      -> OUT_DIR/config.json (+ adapter_config.json) and OUT_DIR/params (orbax checkpoint of the params tree)
  python -m shared.weights export OUT_DIR HF_DIR [--lora merge|drop] [--adapter-out PEFT_DIR]
      [--max-shard-size 5GB] [--dtype bfloat16]
      -> a directory transformers/diffusers/peft load with from_pretrained
  python -m shared.weights convert-avhubert --trust-pickle IN.pt OUT_DIR
      -> config.json + model.safetensors from the official fairseq AV-HuBERT .pt (a pickle: needs the flag)

A bad input (missing or truncated file or shard, unsupported family, mismatching keys/shapes) ends as one
line `error: <ErrorType>: <message>` on stderr with exit code 2; --verbose (anywhere) adds the traceback.
Bad arguments: argparse's usage message, exit code 2.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import traceback


def _dtype(name: str):
  import jax.numpy as jnp
  try:
    return jnp.dtype(name)
  except TypeError:
    raise argparse.ArgumentTypeError(f"{name!r} is not a dtype (e.g. float32, bfloat16, float16)") from None


def _size(text: str) -> str:
  from shared.weights import io
  try:
    if io.parse_size(text) <= 0:
      raise ValueError
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r} is not a positive size (e.g. 5GB, 500MB, 1000000)") from None
  return text


def _restore(src: str):
  import orbax.checkpoint as ocp
  from shared import weights
  from shared.errors import CheckpointError
  from shared.weights import io
  cfg = io.read_json(os.path.join(src, "config.json"))
  module = weights.family_for_config(cfg, os.path.join(src, "config.json")).from_config(cfg)
  if os.path.exists(os.path.join(src, "adapter_config.json")):
    from shared.nn.lora import LoraConfig
    path = os.path.join(src, "adapter_config.json")
    a = io.read_json(path)
    try:
      lora = LoraConfig(a["r"], a["lora_alpha"], a.get("lora_dropout", 0.0), tuple(a["target_modules"]),
                        a.get("use_rslora", False))
    except KeyError as e:
      raise CheckpointError(f"file {path}: missing key {e.args[0]!r}") from None
    module = module.clone(config=module.config.replace(lora=lora))
  ckpt = os.path.abspath(os.path.join(src, "params"))
  if not os.path.isdir(ckpt):
    raise CheckpointError(f"{src} has no params/ directory ({ckpt}); export reads the output of "
                          "`python -m shared.weights import`")
  try:
    params = ocp.StandardCheckpointer().restore(ckpt)
  except Exception as e:  # orbax's own errors on a damaged checkpoint: name the directory
    raise CheckpointError(f"params checkpoint {ckpt} cannot be restored: {type(e).__name__}: {e}") from e
  return module, params


def _parser() -> argparse.ArgumentParser:
  verbose = argparse.ArgumentParser(add_help=False)
  verbose.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, print the traceback too")
  ap = argparse.ArgumentParser(prog="python -m shared.weights", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter, parents=[verbose])
  sub = ap.add_subparsers(dest="cmd", required=True)
  p = sub.add_parser("inspect", parents=[verbose], help="print the module, its config and its param shapes")
  p.add_argument("src")
  p = sub.add_parser("import", parents=[verbose], help="HF directory -> our config.json + params checkpoint")
  p.add_argument("src")
  p.add_argument("out")
  p.add_argument("--adapter")
  p.add_argument("--dtype", default="float32", type=_dtype)
  p = sub.add_parser("export", parents=[verbose], help="our directory -> HF directory")
  p.add_argument("src")
  p.add_argument("out")
  p.add_argument("--lora", default="merge", choices=("merge", "drop"))
  p.add_argument("--adapter-out")
  p.add_argument("--max-shard-size", default="5GB", type=_size)
  p.add_argument("--dtype", type=_dtype)
  p = sub.add_parser("convert-avhubert", parents=[verbose], help="fairseq AV-HuBERT .pt -> config.json + safetensors")
  p.add_argument("src")
  p.add_argument("out")
  p.add_argument("--trust-pickle", action="store_true", help="allow reading the .pt (a pickle: it can run code)")
  return ap


def _run(args) -> int:
  from shared import weights
  from shared.errors import CheckpointError
  from shared.weights import io
  if not os.path.exists(args.src):
    raise CheckpointError(f"{args.src} not found (expected a checkpoint directory)")
  if args.cmd == "convert-avhubert":   # shared/weights/avhubert_family.py
    from shared.weights import avhubert_family
    avhubert_family.convert(args.src, args.out, trust_pickle=args.trust_pickle)
    print(f"converted {args.src} -> {args.out}")
    return 0
  if args.cmd == "inspect":
    module, params = weights.load_pretrained(args.src)
    print(type(module).__name__, module.config)
    for k, v in sorted(weights.abstract_params(module).items()):
      print("/".join(k), v)
    return 0
  if args.cmd == "import":
    import orbax.checkpoint as ocp
    module, params = weights.load_pretrained(args.src, dtype=args.dtype)
    if args.adapter:
      module, params = weights.load_adapter(module, params, args.adapter, dtype=args.dtype)
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
  weights.save_pretrained(module, params, args.out, lora=args.lora, dtype=args.dtype,
                          max_shard_size=args.max_shard_size)
  if args.adapter_out:
    weights.save_adapter(module, params, args.adapter_out, base_model_name_or_path=None, dtype=args.dtype)
  print(f"exported {args.src} -> {args.out}")
  return 0


def main(argv=None) -> int:
  """Runs one subcommand -> 0; a user error (StackError: ConfigError / DataError / CheckpointError, or an
  OSError naming a path) -> one line on stderr and 2 (with the traceback under --verbose)."""
  from shared.errors import StackError
  args = _parser().parse_args(argv)
  try:
    return _run(args)
  except (StackError, OSError) as e:
    if getattr(args, "verbose", False):
      traceback.print_exc()
    message = " ".join(str(e).splitlines())  # one line, whatever the message holds
    print(f"error: {type(e).__name__}: {message}", file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
  sys.exit(main())
