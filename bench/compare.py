#!/usr/bin/env python3
"""Our speed against the fastest CPU runtimes, per case and precision class, in one sitting.

    pip install -r scripts/requirements.txt onnx onnxruntime openvino
    python scripts/make_random_model.py --full-size --seed 0 --out /tmp/altclip-full
    cargo build --release -p altclip-cli
    python bench/compare.py --model /tmp/altclip-full --threads 2

Peers, all on the same weights, shapes (random inputs: cost does not depend on values) and thread
count:
- PyTorch: transformers' AltCLIPModel, fp32, and bf16 under `torch.autocast` (bench/compare_pytorch.py);
- ONNX Runtime (CPUExecutionProvider): the `torch.onnx.export` (opset 17) of `get_image_features`
  / `get_text_features`, f32, and `onnxruntime.quantization.quantize_dynamic` of it (int8 weights,
  what immich and fastembed users get from a "quantized" model);
- OpenVINO: the same ONNX files, f32 (`INFERENCE_PRECISION_HINT=f32`) and bf16 (`=bf16`).

The exports are made once and cached beside the model (`<model>/onnx/`). For every round and case,
our binary runs the case in a fresh process (`altclip bench --json`, load not timed) at each of our
precisions, then each peer runs it in this process; a side's figure is the median over rounds of
each run's median. The table gives items/s and, per precision class, ours / the fastest peer:

    f32   ours f32  against PyTorch f32, ORT f32, OpenVINO f32
    bf16  ours bf16 against PyTorch autocast, OpenVINO bf16
    int8  ours int8 against ORT dynamic int8 (and OpenVINO bf16, the fastest low-precision peer)

Run it on an otherwise idle machine: a concurrent build halves the figures. Put the CPU (model and
the flags amx_bf16, amx_int8, avx512_bf16, avx512_vnni) beside every figure you report.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_pytorch import DEFAULT_CASES, ROOT, Torch, case_name, ours, parse_cases  # noqa: E402

OURS = ("f32", "bf16", "int8")
CLASSES = {
    "f32": ("ours f32", ["pytorch f32", "ort f32", "openvino f32"]),
    "bf16": ("ours bf16", ["pytorch bf16", "openvino bf16"]),
    "int8": ("ours int8", ["ort int8", "openvino bf16"]),
}


def inputs(cfg, kind: str, batch: int, length: int) -> dict:
    """Random model inputs for one case, as numpy arrays."""
    import numpy as np

    rng = np.random.default_rng(batch * 1000 + length)
    if kind == "image":
        side = cfg["vision_config"].get("image_size", 224)
        return {"pixel_values": (rng.random((batch, 3, side, side), dtype=np.float32) * 4 - 2)}
    t = cfg["text_config"]
    ids = rng.integers(5, t.get("vocab_size", 250002) - 1, (batch, length), dtype=np.int64)
    ids[:, 0], ids[:, -1] = t.get("bos_token_id", 0), t.get("eos_token_id", 2)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def export(model_dir: Path) -> dict[str, Path]:
    """The ONNX exports of both towers (f32) and their dynamic int8 versions, made once."""
    out = model_dir / "onnx"
    files = {
        ("image", "f32"): out / "image.onnx",
        ("text", "f32"): out / "text.onnx",
        ("image", "int8"): out / "image-int8.onnx",
        ("text", "int8"): out / "text-int8.onnx",
    }
    if all(f.is_file() for f in files.values()):
        return files
    import torch
    from transformers import AltCLIPModel

    out.mkdir(exist_ok=True)
    model = AltCLIPModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    class Tower(torch.nn.Module):
        """One tower's features, with the model registered so that its weights export as weights."""

        def __init__(self, kind):
            super().__init__()
            self.model, self.kind = model, kind

        def forward(self, *x):
            if self.kind == "image":
                return self.model.get_image_features(pixel_values=x[0]).pooler_output
            return self.model.get_text_features(input_ids=x[0], attention_mask=x[1]).pooler_output

    cfg = model.config.to_dict()
    for kind, module, names, axes in [
        ("image", Tower("image"), ["pixel_values"], {"pixel_values": {0: "batch"}}),
        ("text", Tower("text"), ["input_ids", "attention_mask"],
         {"input_ids": {0: "batch", 1: "length"}, "attention_mask": {0: "batch", 1: "length"}}),
    ]:
        path = files[(kind, "f32")]
        if not path.is_file():
            x = inputs(cfg, kind, 2, 16)
            args = tuple(torch.from_numpy(x[n]) for n in names)
            print(f"exporting {path} ...", file=sys.stderr, flush=True)
            with torch.no_grad():
                torch.onnx.export(module, args, str(path), input_names=names, output_names=["features"],
                                  dynamic_axes={**axes, "features": {0: "batch"}}, opset_version=17,
                                  dynamo=False, external_data=True)
    del model
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for kind in ("image", "text"):
        q = files[(kind, "int8")]
        if not q.is_file():
            print(f"quantising {q} ...", file=sys.stderr, flush=True)
            quantize_dynamic(str(files[(kind, "f32")]), str(q), weight_type=QuantType.QInt8,
                             use_external_data_format=True)
    return files


class Ort:
    """ONNX Runtime on the CPU, one session per tower."""

    def __init__(self, files, precision: str, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.sessions = {kind: ort.InferenceSession(str(files[(kind, precision)]), opts,
                                                    providers=["CPUExecutionProvider"])
                         for kind in ("image", "text")}

    def __call__(self, kind: str, x: dict):
        self.sessions[kind].run(None, x)


class OpenVino:
    """OpenVINO's CPU plugin at an inference precision, one compiled model per tower."""

    def __init__(self, files, precision: str, threads: int):
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision,
                  "PERFORMANCE_HINT": "LATENCY"}
        self.models = {kind: core.compile_model(str(files[(kind, "f32")]), "CPU", config)
                       for kind in ("image", "text")}

    def __call__(self, kind: str, x: dict):
        self.models[kind](x)


def timed(fn, reps: int) -> float:
    """Median seconds of `reps` calls after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model directory (Hugging Face layout)")
    p.add_argument("--binary", type=Path, default=ROOT / "target/release/altclip")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated (default {DEFAULT_CASES})")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds per case")
    p.add_argument("--reps", type=int, default=3, help="timed forward passes per run")
    p.add_argument("--peers", default="pytorch,ort,openvino", help="which peers to run")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = p.parse_args()
    if not args.binary.is_file():
        sys.exit(f"{args.binary}: not found; run `cargo build --release -p altclip-cli` first")
    cfg = json.loads((args.model / "config.json").read_text())
    peers_wanted = set(args.peers.split(","))

    files = export(args.model) if peers_wanted & {"ort", "openvino"} else {}
    peers = {}
    if "pytorch" in peers_wanted:
        # One copy of the weights, run plain and under autocast.
        torch_f32 = Torch(argparse.Namespace(**{**vars(args), "dtype": "f32"}))
        torch_bf16 = copy.copy(torch_f32)
        torch_bf16.args = argparse.Namespace(**{**vars(args), "dtype": "bf16"})
        peers["pytorch f32"], peers["pytorch bf16"] = torch_f32, torch_bf16
    if "ort" in peers_wanted:
        peers["ort f32"] = Ort(files, "f32", args.threads)
        peers["ort int8"] = Ort(files, "int8", args.threads)
    if "openvino" in peers_wanted:
        peers["openvino f32"] = OpenVino(files, "f32", args.threads)
        peers["openvino bf16"] = OpenVino(files, "bf16", args.threads)

    for kind, batch, length in parse_cases(args.cases):
        runs: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for dtype in OURS:
                a = argparse.Namespace(**{**vars(args), "dtype": dtype})
                runs.setdefault(f"ours {dtype}", []).append(ours(a, kind, batch, length)["items_per_s"])
            x = inputs(cfg, kind, batch, length)
            for name, peer in peers.items():
                if name.startswith("pytorch"):
                    rate = peer.run(kind, batch, length)["items_per_s"]
                else:
                    rate = batch / timed(lambda: peer(kind, x), args.reps)
                runs.setdefault(name, []).append(rate)
        rates = {k: statistics.median(v) for k, v in runs.items()}
        what = case_name(kind, batch, length, "all").replace("_all", "")
        ratios = {}
        for cls, (mine, theirs) in CLASSES.items():
            present = [t for t in theirs if t in rates]
            if present:
                best = max(present, key=rates.get)
                ratios[cls] = {"ratio": rates[mine] / rates[best], "best_peer": best}
        row = {"what": what, "threads": args.threads, "items_per_s": rates, "ratios": ratios}
        if args.json:
            print(json.dumps(row), flush=True)
            continue
        print(f"{what}: " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()) + " items/s", flush=True)
        for cls, r in ratios.items():
            print(f"    {cls:<5} ours / {r['best_peer']:<14} {r['ratio']:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
