#!/usr/bin/env python3
"""Our UNet and VAE against diffusers', in one run, on the same CPU and threads.

    python scripts/make_diffusion_fixtures.py --full-size /tmp/altdiffusion-full
    cargo build --release -p altclip-cli
    python bench/diffusion.py /tmp/altdiffusion-full [--size 512] [--steps 3]
    python bench/diffusion.py /tmp/altdiffusion-full --memory

Times guided UNet evaluations (a batch of 2 latents, 77-token conditioning, as a guided step
runs it) and one VAE decode, for diffusers in f32 and under bf16 autocast and for `altclip
generate` in f32 and bf16 (its own report: seconds per step after the first, and the decode);
the first UNet evaluation (warm-up) is left out on both sides. Prints means and the ratios.
`--memory` instead runs a whole 1-step guided 512² image in each (diffusers' AltDiffusionPipeline;
`altclip generate`) under `/usr/bin/time -v` and prints the peak RSS.
Run it on an idle machine: nothing else may build or run meanwhile.
"""

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "target/release/altclip"


def cpu() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split())
    model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name"))
    have = [f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f in flags]
    return f"{model}; {' '.join(have)}"


def diffusers_times(model: Path, size: int, steps: int, bf16: bool) -> tuple[float, float]:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model / "unet").eval()
    vae = AutoencoderKL.from_pretrained(model / "vae").eval()
    g = torch.Generator().manual_seed(0)
    h = size // 8
    sample = torch.randn((2, 4, h, h), generator=g)
    states = torch.randn((2, 77, unet.config.cross_attention_dim), generator=g)
    latents = torch.randn((1, 4, h, h), generator=g)
    unet_s = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(steps):
            t = time.perf_counter()
            unet(sample, 501, encoder_hidden_states=states)
            unet_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        vae.decode(latents / vae.config.scaling_factor)
        vae_s = time.perf_counter() - t
    return statistics.mean(unet_s[1:]), vae_s


def ours(model: Path, dtype: str, size: int, steps: int) -> tuple[float, float]:
    """`altclip generate`'s own report: `PATH (T s; S s/step, decode D s)`."""
    import re
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        line = subprocess.run(
            [str(CLI), "generate", "--model", str(model), "一只猫", "--steps", str(steps), "--width",
             str(size), "--height", str(size), "--dtype", dtype, "--out", out],
            check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    m = re.search(r"; ([0-9.]+) s/step, decode ([0-9.]+) s\)", line)
    return float(m.group(1)), float(m.group(2))


DIFFUSERS_IMAGE = """
import sys, torch
from pathlib import Path
from diffusers import AltDiffusionPipeline, AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
    RobertaSeriesModelWithTransformation)
from transformers import XLMRobertaTokenizerFast
m, size, bf16 = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "bf16"
pipe = AltDiffusionPipeline(
    vae=AutoencoderKL.from_pretrained(m / "vae"), unet=UNet2DConditionModel.from_pretrained(m / "unet"),
    text_encoder=RobertaSeriesModelWithTransformation.from_pretrained(m / "text_encoder"),
    tokenizer=XLMRobertaTokenizerFast.from_pretrained(m / "tokenizer"),
    scheduler=PNDMScheduler.from_pretrained(m / "scheduler"), safety_checker=None,
    feature_extractor=None, requires_safety_checker=False)
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
    pipe("一只猫", num_inference_steps=1, height=size, width=size)
"""


def peak_rss_kb(cmd: list) -> int:
    err = subprocess.run(["/usr/bin/time", "-v", *cmd], check=True, capture_output=True, text=True).stderr
    return int(next(l for l in err.splitlines() if "Maximum resident set size" in l).split(":")[1])


def memory(model: Path, size: int) -> None:
    import sys
    import tempfile

    cli = ROOT / "target/release/altclip"
    print(f"peak RSS, one guided step and a decode at {size}x{size}:")
    print("| dtype | diffusers | ours | ours / diffusers |")
    print("|---|---|---|---|")
    for dtype in ("f32", "bf16"):
        theirs = peak_rss_kb([sys.executable, "-c", DIFFUSERS_IMAGE, str(model), str(size), dtype])
        with tempfile.TemporaryDirectory() as out:
            mine = peak_rss_kb([str(cli), "generate", "--model", str(model), "一只猫", "--steps", "1",
                                "--width", str(size), "--height", str(size), "--dtype", dtype, "--out", out])
        print(f"| {dtype} | {theirs / 1e6:.2f} GB | {mine / 1e6:.2f} GB | {mine / theirs:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3, help="UNet evaluations per case (the first is a warm-up)")
    ap.add_argument("--memory", action="store_true")
    a = ap.parse_args()
    print(f"CPU: {cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if a.memory:
        memory(a.model, a.size)
        return
    rows = {}
    for dtype in ("f32", "bf16"):
        rows[("diffusers", dtype)] = diffusers_times(a.model, a.size, a.steps, dtype == "bf16")
        rows[("ours", dtype)] = ours(a.model, dtype, a.size, a.steps)
    print(f"{a.size}x{a.size}, guided UNet batch 2, mean of {a.steps - 1} evaluations after a warm-up; one decode:")
    print("| case | diffusers | ours | ratio (diffusers / ours) |")
    print("|---|---|---|---|")
    for dtype in ("f32", "bf16"):
        for i, part in enumerate(("UNet evaluation", "VAE decode")):
            d, o = rows[("diffusers", dtype)][i], rows[("ours", dtype)][i]
            print(f"| {dtype} {part} | {d:.2f} s | {o:.2f} s | {d / o:.2f}x |")


if __name__ == "__main__":
    main()
