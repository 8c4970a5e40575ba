#!/usr/bin/env python3
"""Reference outputs of diffusers' schedulers for the Rust scheduler tests.

    pip install -r scripts/requirements.txt
    python scripts/make_diffusion_fixtures.py          # writes tests/fixtures/diffusion/schedulers.json

The scheduler config is AltDiffusion's (BAAI/AltDiffusion scheduler/scheduler_config.json, a
PNDMScheduler). Each scheduler is built the way a diffusers user switches schedulers:
`Cls.from_config(PNDMScheduler.from_config(file).config)`, so keys the file lacks take PNDM's defaults. For
each, with a seeded [1, 4, 4, 4] sample and a seeded model output per step, the file records the
timesteps, init_noise_sigma, and per step the scaled model input, the noise the step draws (Euler
ancestral; drawn from a clone of the step's generator) and the step's output. Deterministic.
"""

import json
from pathlib import Path

import diffusers
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    PNDMScheduler,
)

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/diffusion/schedulers.json"

ALTDIFFUSION = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

KINDS = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "dpm++": DPMSolverMultistepScheduler,
}


def flat(t: torch.Tensor) -> list[float]:
    return [float(x) for x in t.reshape(-1)]


def run(kind: str, steps: int) -> dict:
    base = PNDMScheduler.from_config(ALTDIFFUSION).config
    sched = KINDS[kind].from_config(base)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(1000 + steps)
    shape = (1, 4, 4, 4)
    sample = torch.randn(shape, generator=g) * float(sched.init_noise_sigma)
    record = {
        "kind": kind,
        "steps": steps,
        "timesteps": [float(t) for t in sched.timesteps],
        "init_noise_sigma": float(sched.init_noise_sigma),
        "sample": flat(sample),
        "trace": [],
    }
    step_gen = torch.Generator().manual_seed(7)
    for i, t in enumerate(sched.timesteps):
        scaled = sched.scale_model_input(sample, t)
        model_output = torch.randn(shape, generator=g)
        noise = None
        if kind == "euler-a":
            noise = torch.randn(shape, generator=_clone(step_gen))
        extra = {"generator": step_gen} if kind == "euler-a" else {}
        out = sched.step(model_output, t, sample, **extra).prev_sample
        record["trace"].append({
            "scaled_input": flat(scaled),
            "model_output": flat(model_output),
            "noise": flat(noise) if noise is not None else None,
            "prev_sample": flat(out),
        })
        sample = out
    return record


def _clone(gen: torch.Generator) -> torch.Generator:
    c = torch.Generator()
    c.set_state(gen.get_state())
    return c


def main() -> None:
    cases = [run(kind, steps) for kind in KINDS for steps in (4, 10)]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "config": ALTDIFFUSION,
        "cases": cases,
    }, indent=None))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
