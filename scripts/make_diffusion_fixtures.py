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

FIXTURES = Path(__file__).resolve().parent.parent / "tests/fixtures/diffusion"
OUT = FIXTURES / "schedulers.json"

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


def text_encoder(name: str, pre_transformation: bool) -> None:
    """A tiny random RobertaSeriesModelWithTransformation (AltDiffusion's text encoder; the m18
    variant with `has_pre_transformation`) and its outputs on two padded prompts."""
    from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
        RobertaSeriesConfig,
        RobertaSeriesModelWithTransformation,
    )
    from safetensors.torch import save_file

    cfg = RobertaSeriesConfig(
        vocab_size=1002, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=80, type_vocab_size=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, project_dim=24, layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        has_pre_transformation=pre_transformation,
    )
    torch.manual_seed(11 if pre_transformation else 10)
    model = RobertaSeriesModelWithTransformation(cfg).eval()
    with torch.no_grad():  # random LayerNorm affine, so that a missing LN shows
        for n, p in model.named_parameters():
            if "LayerNorm" in n or "pre_LN" in n:
                p.add_(torch.randn_like(p) * 0.1)
    out = FIXTURES / name
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_json_file(out / "config.json")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    ids = torch.tensor([[0, 17, 250, 31, 999, 2, 1, 1, 1, 1, 1, 1], [0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 2]])
    mask = (ids != 1).long()
    with torch.no_grad():
        states = model(input_ids=ids, attention_mask=mask).projection_state
    (out / "outputs.json").write_text(json.dumps({
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "projection_state": [flat(s) for s in states],
        "shape": list(states.shape),
    }))


def main() -> None:
    text_encoder("text-encoder", False)
    text_encoder("text-encoder-m18", True)
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
