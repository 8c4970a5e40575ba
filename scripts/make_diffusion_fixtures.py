#!/usr/bin/env python3
"""Reference outputs of diffusers' schedulers for the Rust scheduler tests.

    pip install -r scripts/requirements.txt
    python scripts/make_diffusion_fixtures.py          # writes tests/fixtures/diffusion/
    python scripts/make_diffusion_fixtures.py --full-size /tmp/altdiffusion-full   # ~6 GB, timing only

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


def full_size(out: Path) -> None:
    """A BAAI/AltDiffusion-shaped pipeline with random weights (SD v1 UNet with 768-d cross
    attention, SD VAE, XLM-R-large text encoder; about 6 GB in f32), for timing only."""
    from diffusers import AltDiffusionPipeline, AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
        RobertaSeriesConfig,
        RobertaSeriesModelWithTransformation,
    )
    from transformers import XLMRobertaTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    )
    cfg = RobertaSeriesConfig(
        vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, project_dim=768, layer_norm_eps=1e-5,
    )
    text_encoder = RobertaSeriesModelWithTransformation(cfg)
    tokenizer = XLMRobertaTokenizer.from_pretrained(FIXTURES.parent / "spm", model_max_length=77)
    pipe = AltDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler.from_config(ALTDIFFUSION), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    print(f"wrote {out}")


def main() -> None:
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--full-size":
        full_size(Path(sys.argv[2]))
        return
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
    tiny_pipeline()
    print(f"wrote {FIXTURES / 'tiny-altdiffusion'}")
    img2img_and_tiles(FIXTURES / "tiny-altdiffusion")
    uncommon_pipeline()
    print(f"wrote {FIXTURES / 'tiny-uncommon'}")



def tiny_pipeline() -> None:
    """A tiny random AltDiffusion pipeline in diffusers' folder layout, with reference outputs of
    one UNet forward, one VAE decode and the whole pipeline for 3 PNDM steps from fixed latents.
    (32 channels and 32 groups: candle's resnet blocks always use 32 GroupNorm groups.)"""
    import shutil

    from diffusers import AltDiffusionPipeline, AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
        RobertaSeriesModelWithTransformation,
    )
    from transformers import XLMRobertaTokenizer

    root = FIXTURES / "tiny-altdiffusion"
    shutil.rmtree(root, ignore_errors=True)
    torch.manual_seed(20)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
        attention_head_dim=2, norm_num_groups=32,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=32, sample_size=16,
    ).eval()
    with torch.no_grad():  # random norms and a non-trivial output scale
        for m in (unet, vae):
            for n, p in m.named_parameters():
                if "norm" in n:
                    p.add_(torch.randn_like(p) * 0.1)
    text_encoder = RobertaSeriesModelWithTransformation.from_pretrained(FIXTURES / "text-encoder").eval()
    # (transformers 5 ignores vocab_file= in the constructor: load the folder.)
    tokenizer = XLMRobertaTokenizer.from_pretrained(FIXTURES.parent / "spm", model_max_length=77)
    assert len(tokenizer) == 1002, len(tokenizer)
    scheduler = PNDMScheduler.from_config(ALTDIFFUSION)
    pipe = AltDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(root, safe_serialization=True)

    g = torch.Generator().manual_seed(21)
    sample = torch.randn((2, 4, 8, 8), generator=g)
    states = torch.randn((2, 5, 24), generator=g)
    latents = torch.randn((1, 4, 8, 8), generator=g)
    with torch.no_grad():
        unet_out = unet(sample, 501, encoder_hidden_states=states).sample
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
        image = pipe(
            "一只猫 a cat", negative_prompt="", num_inference_steps=3, guidance_scale=7.5,
            latents=latents, height=16, width=16, output_type="np",
        ).images
    (root / "reference.json").write_text(json.dumps({
        "diffusers": diffusers.__version__,
        "unet": {"sample": flat(sample), "timestep": 501, "encoder_hidden_states": flat(states),
                 "shape": list(unet_out.shape), "output": flat(unet_out)},
        "vae": {"latents": flat(latents), "shape": list(decoded.shape), "decoded": flat(decoded)},
        "pipeline": {"prompt": "一只猫 a cat", "negative_prompt": "", "steps": 3, "guidance_scale": 7.5,
                     "latents": flat(latents), "height": 16, "width": 16,
                     "image_shape": list(image.shape), "image": [float(x) for x in image.reshape(-1)]},
    }))


def init_image(path: Path, width: int, height: int) -> None:
    """A smooth, seeded RGB test picture (PNG, lossless), sized so that diffusers must resize it."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x * 0.7 + y * 0.3)], axis=-1)
    rng = np.random.default_rng(5)
    rgb = np.clip(rgb * 255 + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def img2img_reference(pipe, folder: Path, prompt: str, steps: int, strength: float, guidance: float,
                      seed: int) -> dict:
    """diffusers' img2img on folder/init.png, with the two Gaussian draws its generator makes
    (the latent sample, then the noise add_noise mixes in) recorded for the Rust side."""
    from PIL import Image

    image = Image.open(folder / "init.png").convert("RGB")
    w, h = (v - v % pipe.vae_scale_factor for v in image.size)
    shape = (1, pipe.vae.config.latent_channels, h // pipe.vae_scale_factor, w // pipe.vae_scale_factor)
    g = torch.Generator().manual_seed(seed)
    sample_noise = torch.randn(shape, generator=g)
    noise = torch.randn(shape, generator=g)
    with torch.no_grad():
        pixels = pipe.image_processor.preprocess(image)
        out = pipe(prompt, image=image, strength=strength, num_inference_steps=steps,
                   guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
                   output_type="np").images
        dist = pipe.vae.encode(pixels).latent_dist
    return {
        "prompt": prompt, "steps": steps, "strength": strength, "guidance_scale": guidance,
        "latent_shape": list(shape), "sample_noise": flat(sample_noise), "noise": flat(noise),
        "pixels_shape": list(pixels.shape), "pixels": flat(pixels),
        "mean": flat(dist.mean), "std": flat(dist.std),
        "image_shape": list(out.shape), "image": [float(x) for x in out.reshape(-1)],
    }


def img2img_and_tiles(root: Path) -> None:
    """img2img and a tiled VAE decode on the tiny pipeline: img2img.json."""
    from diffusers import AltDiffusionImg2ImgPipeline, AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
        RobertaSeriesModelWithTransformation,
    )
    from transformers import XLMRobertaTokenizer

    # (from_pretrained on the folder cannot resolve the deprecated text encoder class.)
    pipe = AltDiffusionImg2ImgPipeline(
        vae=AutoencoderKL.from_pretrained(root / "vae").eval(),
        text_encoder=RobertaSeriesModelWithTransformation.from_pretrained(root / "text_encoder").eval(),
        tokenizer=XLMRobertaTokenizer.from_pretrained(FIXTURES.parent / "spm", model_max_length=77),
        unet=UNet2DConditionModel.from_pretrained(root / "unet").eval(),
        scheduler=PNDMScheduler.from_pretrained(root / "scheduler"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    init_image(root / "init.png", 21, 19)
    ref = {"diffusers": diffusers.__version__,
           "img2img": img2img_reference(pipe, root, "一只猫 a cat", 5, 0.6, 7.5, 33)}
    # Tiles of 8 latents (sample_size 16 / 2), overlapping by 2: a 12×12 latent is 2×2 tiles.
    latents = torch.randn((1, 4, 12, 12), generator=torch.Generator().manual_seed(34))
    pipe.vae.enable_tiling()
    with torch.no_grad():
        tiled = pipe.vae.decode(latents).sample
    ref["tiled"] = {"latents": flat(latents), "shape": list(tiled.shape), "decoded": flat(tiled)}
    (root / "img2img.json").write_text(json.dumps(ref))
    print(f"wrote {root / 'img2img.json'}")


def uncommon_pipeline() -> None:
    """A tiny pipeline whose configs stray from Stable Diffusion v1's in every way our UNet and
    VAE claim to honour: 8 norm groups, linear projections, per-block layer and head counts, two
    transformer layers, a kernel-5 conv_in and kernel-1 conv_out, centred input, flipped-off
    sin/cos with a frequency shift, a larger time embedding, unpadded downsampling, a mid-block
    output scale, a VAE without quant convs or mid-block attention, and a text encoder run
    without its attention mask. References: a UNet forward on odd latents (5×7, so that the
    upsamplers follow the skips' sizes), a VAE decode and encode, and a 2-step pipeline."""
    import shutil

    from diffusers import AltDiffusionPipeline, AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
        RobertaSeriesModelWithTransformation,
    )
    from transformers import XLMRobertaTokenizer

    root = FIXTURES / "tiny-uncommon"
    shutil.rmtree(root, ignore_errors=True)
    torch.manual_seed(40)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=[1, 2],
        block_out_channels=(16, 24), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=24,
        attention_head_dim=[2, 3], norm_num_groups=8, use_linear_projection=True,
        transformer_layers_per_block=[1, 2], conv_in_kernel=5, conv_out_kernel=1,
        center_input_sample=True, flip_sin_to_cos=False, freq_shift=1, time_embedding_dim=40,
        downsample_padding=0, mid_block_scale_factor=1.5, upcast_attention=True,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 24),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=2, norm_num_groups=8, sample_size=16, scaling_factor=0.5,
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False,
    ).eval()
    with torch.no_grad():
        for m in (unet, vae):
            for n, p in m.named_parameters():
                if "norm" in n:
                    p.add_(torch.randn_like(p) * 0.1)
    text_encoder = RobertaSeriesModelWithTransformation.from_pretrained(FIXTURES / "text-encoder").eval()
    text_encoder.config.use_attention_mask = False
    tokenizer = XLMRobertaTokenizer.from_pretrained(FIXTURES.parent / "spm", model_max_length=77)
    pipe = AltDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler.from_config(ALTDIFFUSION), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(root, safe_serialization=True)
    g = torch.Generator().manual_seed(41)
    sample = torch.randn((2, 4, 5, 7), generator=g)
    states = torch.randn((2, 6, 24), generator=g)
    latents = torch.randn((1, 4, 8, 12), generator=g)
    image = torch.rand((1, 3, 16, 24), generator=g) * 2 - 1
    with torch.no_grad():
        unet_out = unet(sample, 301, encoder_hidden_states=states).sample
        decoded = vae.decode(latents / vae.config.scaling_factor).sample
        dist = vae.encode(image).latent_dist
        out = pipe("海边的灯塔 a lighthouse", negative_prompt="blurry", num_inference_steps=2,
                   guidance_scale=5.0, latents=latents, height=16, width=24, output_type="np").images
    (root / "reference.json").write_text(json.dumps({
        "diffusers": diffusers.__version__,
        "unet": {"sample": flat(sample), "sample_shape": list(sample.shape), "timestep": 301,
                 "encoder_hidden_states": flat(states), "states_shape": list(states.shape),
                 "shape": list(unet_out.shape), "output": flat(unet_out)},
        "vae": {"latents": flat(latents), "latent_shape": list(latents.shape),
                "shape": list(decoded.shape), "decoded": flat(decoded),
                "image": flat(image), "image_shape": list(image.shape),
                "mean": flat(dist.mean), "std": flat(dist.std)},
        "pipeline": {"prompt": "海边的灯塔 a lighthouse", "negative_prompt": "blurry", "steps": 2,
                     "guidance_scale": 5.0, "latents": flat(latents), "height": 16, "width": 24,
                     "image_shape": list(out.shape), "image": [float(x) for x in out.reshape(-1)]},
    }))


if __name__ == "__main__":
    main()
