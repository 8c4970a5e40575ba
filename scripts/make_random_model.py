#!/usr/bin/env python3
"""Write a random-weight AltCLIP model directory in Hugging Face Hub layout.

    python scripts/make_random_model.py --out /tmp/altclip-rand --tiny --seed 7
    python scripts/make_random_model.py --out /tmp/altclip-full --full-size --seed 0   # ~3.5 GB, slow

--full-size   the BAAI/AltCLIP shape: text XLM-R-large (24 layers, hidden 1024, 16 heads, FFN 4096,
              vocab 250002, max positions 514, project_dim 768), vision ViT-L/14 at 224 px (24 layers,
              1024, 16 heads, 4096), projection_dim 768.  864,186,113 parameters, fp32.
--tiny        (default) a small model whose shape is DERIVED FROM THE SEED (hidden sizes, heads,
              layers, patch/image size, eps, preprocessing sizes), so it is unlike the checked-in
              fixtures: use it to test on "a model the test suite has never seen".

Files written: config.json, model.safetensors (hub key names: text ``encoder.layer.N``, vision
``encoder.layers.N``), preprocessor_config.json, and the tokenizer files of the trained test
tokenizer from tests/fixtures/spm (tokenizer.json, sentencepiece.bpe.model, tokenizer_config.json,
special_tokens_map.json) because the real XLM-R tokenizer is not available offline.  Its vocabulary
has 1002 entries; the full-size model keeps vocab_size 250002 (ids < 1002 are simply a subset).

Memory: parameters are generated one tensor at a time and streamed into the safetensors file (the
header is computed up-front from the shapes of a meta-device model), so the peak is about one tensor
(the 250002x1024 word embedding, ~1 GB) rather than the whole model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import (  # noqa: E402
    SPECIAL_TOKENS_MAP,
    TOKENIZER_CONFIG,
    preprocessor_config,
    write_pretty_json,
)

SPM_DIR = ROOT / "tests" / "fixtures" / "spm"


def full_size_spec() -> dict:
    return dict(
        text=dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, max_position_embeddings=514, project_dim=768, hidden_act="gelu",
                  layer_norm_eps=1e-5, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2),
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=224, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                    projection_dim=768),
        projection_dim=768,
        shortest_edge=224,
        crop=224,
        logit_scale=4.6052,
    )


def tiny_spec(seed: int, vocab_size: int) -> dict:
    rng = random.Random(1000 + seed)
    t_heads = rng.choice([2, 3, 6, 8])
    t_hd = rng.choice([6, 8, 12])
    v_heads = rng.choice([2, 3, 4, 6])
    v_hd = rng.choice([4, 8, 10])
    patch = rng.choice([4, 7, 8, 16])
    grid = rng.choice([3, 5, 6, 8])
    image = patch * grid
    t_hidden, v_hidden = t_heads * t_hd, v_heads * v_hd
    return dict(
        text=dict(vocab_size=vocab_size, hidden_size=t_hidden, num_hidden_layers=rng.choice([1, 2, 3, 4]),
                  num_attention_heads=t_heads, intermediate_size=t_hidden * rng.choice([2, 3, 4]) + rng.choice([0, 4]),
                  max_position_embeddings=514, project_dim=rng.choice([16, 24, 36, 52]),
                  layer_norm_eps=rng.choice([1e-5, 1e-6, 1e-12])),
        vision=dict(hidden_size=v_hidden, intermediate_size=v_hidden * rng.choice([2, 4]) + rng.choice([0, 2]),
                    num_hidden_layers=rng.choice([1, 2, 3, 4]), num_attention_heads=v_heads, image_size=image,
                    patch_size=patch, hidden_act="quick_gelu", layer_norm_eps=rng.choice([1e-5, 1e-6])),
        projection_dim=rng.choice([8, 20, 28, 64]),
        shortest_edge=image + rng.choice([0, 3, 10, 17]),
        crop=image,
        logit_scale=round(rng.uniform(1.0, 4.6), 4),
    )


def param_init_plan(model: torch.nn.Module):
    """(hub_name, shape, kind) for every parameter, in a deterministic order."""
    ln = {n for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    emb = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    plan = []
    for name, p in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        if name == "logit_scale":
            kind = "logit_scale"
        elif owner in ln and leaf == "weight":
            kind = "ln_weight"
        elif leaf == "bias":
            kind = "bias"
        elif owner in emb or leaf == "class_embedding":
            kind = "embedding"
        elif p.dim() >= 2:
            kind = "qk" if owner.endswith(("self.query", "self.key", "self_attn.q_proj", "self_attn.k_proj")) else "linear"
        else:
            raise AssertionError(f"unhandled parameter {name}")
        hub = name.replace("text_model.roberta.encoder.layers.", "text_model.roberta.encoder.layer.")
        plan.append((hub, tuple(p.shape), kind))
    return plan


def make_tensor(shape, kind: str, gen: torch.Generator, logit_scale: float) -> torch.Tensor:
    if kind == "logit_scale":
        return torch.tensor(logit_scale, dtype=torch.float32)
    t = torch.empty(shape, dtype=torch.float32)
    if kind == "ln_weight":
        return t.normal_(1.0, 0.1, generator=gen)
    if kind == "bias":
        return t.normal_(0.0, 0.1, generator=gen)
    if kind == "embedding":
        return t.normal_(0.0, 0.3, generator=gen)
    fan_in = int(np.prod(shape[1:]))
    std = (2.0 if kind == "qk" else 1.0) / math.sqrt(fan_in)
    return t.normal_(0.0, std, generator=gen)


def stream_safetensors(path: Path, plan, seed: int, logit_scale: float) -> None:
    """Write a safetensors file tensor by tensor (sorted by name), generating each tensor on the fly.
    Each tensor has its own generator seeded from (seed, name), so values do not depend on order."""
    plan = sorted(plan, key=lambda x: x[0])
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in plan:
        nbytes = 4 * int(np.prod(shape)) if shape else 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for name, shape, kind in plan:
            g = torch.Generator().manual_seed(seed * 100003 + _stable_hash(name))
            t = make_tensor(shape, kind, g, logit_scale).contiguous()
            f.write(memoryview(t.numpy()).cast("B"))
            del t
    os.chmod(path, 0o644)


def _stable_hash(s: str) -> int:
    h = 2166136261
    for b in s.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--full-size", action="store_true", help="BAAI/AltCLIP shape (~3.5 GB fp32)")
    g.add_argument("--tiny", action="store_true", help="small seed-dependent shape (default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer-dir", type=Path, default=SPM_DIR,
                    help="directory with tokenizer.json / sentencepiece.bpe.model (default: tests/fixtures/spm)")
    ap.add_argument("--verify", action="store_true",
                    help="load the result with transformers (always done for --tiny)")
    ap.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    args = ap.parse_args()

    from transformers import AltCLIPConfig, AltCLIPModel

    tok_dir = args.tokenizer_dir
    for f in ("tokenizer.json", "sentencepiece.bpe.model"):
        if not (tok_dir / f).exists():
            ap.error(f"{tok_dir / f} missing (run scripts/make_fixtures.py first)")
    vocab = json.loads((tok_dir / "tokenizer.json").read_text())["model"]["vocab"]
    spec = full_size_spec() if args.full_size else tiny_spec(args.seed, len(vocab))

    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not args.force:
            ap.error(f"{out} is not empty (use --force)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    cfg = AltCLIPConfig(text_config=spec["text"], vision_config=spec["vision"], projection_dim=spec["projection_dim"])
    with torch.device("meta"):
        meta_model = AltCLIPModel(cfg)
    plan = param_init_plan(meta_model)
    n_params = sum(int(np.prod(s)) if s else 1 for _, s, _ in plan)
    del meta_model

    cfg.architectures = ["AltCLIPModel"]
    cfg.save_pretrained(out)
    stream_safetensors(out / "model.safetensors", plan, args.seed, spec["logit_scale"])
    write_pretty_json(out / "preprocessor_config.json", preprocessor_config(spec["shortest_edge"], spec["crop"]))
    for f in ("tokenizer.json", "sentencepiece.bpe.model"):
        shutil.copy(tok_dir / f, out / f)
    write_pretty_json(out / "tokenizer_config.json", TOKENIZER_CONFIG)
    write_pretty_json(out / "special_tokens_map.json", SPECIAL_TOKENS_MAP)

    print(f"wrote {out}  ({n_params:,} parameters)")
    print(" text:", {k: v for k, v in spec["text"].items() if k != "vocab_size"}, "vocab", spec["text"]["vocab_size"])
    print(" vision:", spec["vision"])
    print(" projection_dim:", spec["projection_dim"], " logit_scale:", spec["logit_scale"],
          " preprocess: shortest_edge", spec["shortest_edge"], "crop", spec["crop"])

    if args.verify or not args.full_size:
        import transformers
        from safetensors import safe_open

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        model, info = AltCLIPModel.from_pretrained(out, output_loading_info=True)
        bad = {k: [x for x in v if "position_ids" not in x] for k, v in info.items() if k != "error_msgs"}
        assert not any(bad.values()) and not info.get("error_msgs"), info
        with safe_open(str(out / "model.safetensors"), "pt") as f:
            for k, v in model.state_dict().items():
                hk = k.replace("text_model.roberta.encoder.layers.", "text_model.roberta.encoder.layer.")
                if hk in f.keys():
                    assert torch.equal(f.get_tensor(hk), v), k
        print(" verified: transformers loads it with no missing/unexpected keys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
