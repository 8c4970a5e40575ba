#!/usr/bin/env python3
"""Generate the training fixtures under ``tests/fixtures/train/`` (deterministic).

    /work/venv/bin/python scripts/make_train_fixtures.py
    # or: pip install -r scripts/requirements.txt && python scripts/make_train_fixtures.py

Run ``scripts/make_fixtures.py`` first: the student is ``tests/fixtures/tiny-224`` and the
tokenizer corpus comes from that script.

Layout:

    clip-tiny/            a random-weight CLIPModel (text 48-d, 2 layers; vision 32 px) in hub layout,
                          with a byte-level BPE tokenizer trained here (CLIP's pipeline, eos = largest id),
                          reference.json = transformers' CLIPTextModel outputs (both EOS pooling rules)
    distill.json          phase 1: three AdamW steps of parallel-text distillation of tiny-224 towards
                          clip-tiny with torch.optim.AdamW; batches, token ids, teacher targets, losses,
                          gradient norms and learning rates per step
    distill_after.safetensors      the student's text tower after those three steps
    contrastive.json      phase 2: three AdamW steps of symmetric InfoNCE on tiny-224 (frozen image
                          features recorded here), zh/en captions mixed in each batch
    contrastive_after.safetensors  text tower + text_projection after those three steps
    schedules.json        transformers' get_{cosine,linear}_schedule_with_warmup learning rates

The *_after files hold every trained tensor, except that the two big embedding tables are stored
as the rows listed in the JSON (`word_rows`, `position_rows`) under `<name>.rows`.

Conventions pinned down here and mirrored by the Rust trainer (crates/altclip/src/train/):
* AdamW (torch.optim.AdamW, single-tensor path) with weight decay on tensors of rank >= 2 only
  (biases and LayerNorm parameters are exempt).
* Gradient accumulation: each micro-batch loss is divided by the number of micro-batches and the
  gradients are summed; the logged loss is the mean of the micro-batch losses.
* Clipping: torch.nn.utils.clip_grad_norm_ over all trained tensors (the reported norm is the
  pre-clipping one).
* Learning rate at optimizer step k (0-based): base * lambda(k) of the transformers schedule.
* Distillation batches: student inputs are the English sides then the translated sides, both
  targeting the teacher's pooled embedding of the English side; MSELoss (mean).
* Contrastive: text_model.* and text_projection are trained, logit_scale and the image tower are
  frozen; loss = (CE(logits_per_text) + CE(logits_per_image)) / 2 with logits = exp(logit_scale) *
  cos.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import (  # noqa: E402
    FIX,
    build_corpus,
    deterministic_setup,
    open_for_reference,
    preprocessor_config,
    randomize_,
    save_st,
    write_json,
    write_pretty_json,
)

OUT = FIX / "train"
STUDENT = FIX / "tiny-224"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

# --------------------------------------------------------------------------------------------------
# 1. The teacher: a tiny CLIP with a byte-level BPE vocabulary laid out like OpenAI's
#    (256 bytes, 256 bytes + "</w>", merges, then <|startoftext|>, <|endoftext|> last).
# --------------------------------------------------------------------------------------------------


def train_clip_bpe(n_merges: int = 400) -> tuple[dict[str, int], list[str]]:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from tokenizers.pre_tokenizers import ByteLevel

    lines = [line for i, line in enumerate(build_corpus()) if i % 6 in (3, 5)]  # the English kinds
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
        ByteLevel(add_prefix_space=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=10_000, initial_alphabet=ByteLevel.alphabet(),
                                  end_of_word_suffix="</w>", show_progress=False)
    tok.train_from_iterator(lines, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]][:n_merges]
    alphabet = sorted(ByteLevel.alphabet())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    seen = set(vocab_list)
    for m in merges:
        merged = m.replace(" ", "")
        if merged not in seen:
            seen.add(merged)
            vocab_list.append(merged)
    vocab_list += [BOS, EOS]
    return {t: i for i, t in enumerate(vocab_list)}, merges


TEACHER_TEXTS = [
    "a photo of a cat on the grass",
    "A Photo Of A DOG.",
    "the quick brown fox jumps over the lazy dog",
    "It's a small house, isn't it? We'll see; they'd know.",
    "multiple    spaces\tand\nnewlines",
    "Numbers: 0 1 2 42 2023 3.14",
    "punctuation!!! (brackets) [more] {and} <angles> --- ...",
    "café naïve résumé",
    "一只猫 and a dog 🐶",
    "",
    "x",
    "a very long caption " + "about a big red car driving down the road " * 12,
]


def make_teacher(out: Path) -> dict:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    out.mkdir(parents=True)
    vocab, merges = train_clip_bpe()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], model_max_length=77)
    tok.save_pretrained(out)
    for name in ("chat_template.jinja",):
        (out / name).unlink(missing_ok=True)
    tok = CLIPTokenizer.from_pretrained(out)
    assert tok.eos_token_id == len(vocab) - 1 and tok.pad_token_id == tok.eos_token_id
    # the raw tokenizer.json must agree with what transformers rebuilds from it
    from tokenizers import Tokenizer
    raw = Tokenizer.from_file(str(out / "tokenizer.json"))
    for t in TEACHER_TEXTS:
        assert raw.encode(t).ids == tok(t)["input_ids"], t

    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                         layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                         projection_dim=32),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act="quick_gelu", projection_dim=32),
        projection_dim=32,
    )
    model = CLIPModel(cfg).eval()
    randomize_(model, seed=31, logit_scale=math.log(20.0))
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
          if not k.endswith("position_ids")}
    save_st(sd, out / "model.safetensors")
    cfg.save_pretrained(out)
    pp = preprocessor_config(32, 32)
    pp["processor_class"] = "CLIPProcessor"
    write_pretty_json(out / "preprocessor_config.json", pp)

    model, info = CLIPModel.from_pretrained(out, output_loading_info=True, attn_implementation="eager")
    assert not any(info.values()), info
    model.eval()
    enc = tok(TEACHER_TEXTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    ids = [tok(t, truncation=True, max_length=77)["input_ids"] for t in TEACHER_TEXTS]
    assert len(ids[-1]) == 77 and ids[-1][-1] == tok.eos_token_id
    with torch.no_grad():
        text = model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        embeds = model.text_projection(text.pooler_output)
        # the other pooling rule: the first position of eos_token_id (here set to <|startoftext|>,
        # which pools position 0 and so cannot coincide with the argmax rule)
        model.text_model.eos_token_id = tok.bos_token_id
        first_eos = model.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        model.text_model.eos_token_id = 2
        single = [model.text_model(input_ids=torch.tensor([i])).pooler_output[0] for i in ids]
    for i, s in enumerate(single):
        assert torch.allclose(s, text.pooler_output[i], atol=1e-5), i
    pooled = text.pooler_output.numpy()
    assert np.std(pooled) > 0.3 and not np.allclose(first_eos.pooler_output.numpy(), pooled)
    mask = enc["attention_mask"][0].bool()
    return {
        "texts": TEACHER_TEXTS,
        "ids": ids,
        "pooler_output": pooled,
        "text_embeds": embeds.numpy(),
        "last_hidden_state_0": text.last_hidden_state[0][mask].reshape(-1).numpy(),
        "first_eos_token_id": tok.bos_token_id,
        "pooler_output_first_eos": first_eos.pooler_output.numpy(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }


# --------------------------------------------------------------------------------------------------
# 2. Three AdamW steps in PyTorch, both phases.
# --------------------------------------------------------------------------------------------------

PAIRS = [
    ("a photo of a cat", "一张猫的照片"),
    ("a small dog on the grass", "草地上的一只小狗"),
    ("the city at night", "城市的夜景"),
    ("a red car on the street", "街道上的一辆红色的汽车"),
    ("two ducks in the river", "河里的两只鸭子"),
    ("a child is playing in the park", "一个孩子在公园里玩耍"),
    ("a white horse in the snow", "雪地里的一匹白马"),
    ("an old man is reading a book", "一个老人在看书"),
    ("a bird flying in the sky", "一只小鸟在天空中飞翔"),
    ("a panda is sleeping in the forest", "这只熊猫在森林里睡觉"),
    ("a boat on the beach", "海边的一艘小船"),
    ("flowers in the garden", "花园里的花"),
]

CAPTIONS = [  # (image, caption): zh and en mixed in every batch
    ("photo.png", "一张照片，有形状和颜色"),
    ("noise.png", "random noise"),
    ("gray.png", "一张灰色的图片"),
    ("small.png", "a tiny picture"),
    ("wide.png", "a very wide image"),
    ("tall.png", "一张很高的图片"),
    ("palette.png", "a palette image with sixteen colours"),
    ("rgba.png", "一张透明的图片"),
    ("photo.bmp", "the same photo as a bitmap"),
    ("la.png", "灰色和透明"),
    ("photo.webp", "一张 webp 照片"),
    ("anim.gif", "an animated gif"),
]


def hub_name(name: str) -> str:
    return name.replace("text_model.roberta.encoder.layers.", "text_model.roberta.encoder.layer.")


def adamw(named: list[tuple[str, torch.nn.Parameter]], hp: dict) -> torch.optim.Optimizer:
    decay = [p for _, p in named if p.ndim >= 2]
    no_decay = [p for _, p in named if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"], foreach=False, fused=False)


def schedule(opt, hp: dict):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    fn = get_cosine_schedule_with_warmup if hp["schedule"] == "cosine" else get_linear_schedule_with_warmup
    return fn(opt, hp["warmup_steps"], hp["total_steps"])


def run_steps(named, hp, micro_losses) -> dict:
    """Three optimizer steps; micro_losses(step) yields the micro-batch losses of that step."""
    opt = adamw(named, hp)
    sched = schedule(opt, hp)
    params = [p for _, p in named]
    losses, norms, lrs = [], [], []
    for step in range(hp["steps"]):
        opt.zero_grad(set_to_none=True)
        micro = []
        for loss in micro_losses(step):
            (loss / hp["accumulation"]).backward()
            micro.append(float(loss))
        norm = torch.nn.utils.clip_grad_norm_(params, hp["clip_grad_norm"])
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        losses.append(sum(micro) / len(micro))
        norms.append(float(norm))
    return {"losses": losses, "grad_norms": norms, "lrs": lrs}


def save_after(named, used_word_rows: list[int], n_positions: int, path: Path) -> dict:
    word_rows = sorted(set(used_word_rows) | {3, 500, 1001})
    position_rows = list(range(n_positions))
    sd = {}
    for n, p in named:
        n = hub_name(n)
        t = p.detach().clone()
        if n.endswith("word_embeddings.weight"):
            sd[n + ".rows"] = t[word_rows].contiguous()
        elif n.endswith("position_embeddings.weight"):
            sd[n + ".rows"] = t[position_rows].contiguous()
        else:
            sd[n] = t.contiguous()
    save_st(sd, path)
    return {"word_rows": word_rows, "position_rows": position_rows,
            "trained": sorted(hub_name(n) for n, _ in named)}


def load_student():
    from transformers import AltCLIPModel, XLMRobertaTokenizer

    model = AltCLIPModel.from_pretrained(STUDENT, attn_implementation="eager").eval()  # dropout off
    for p in model.parameters():
        p.requires_grad_(False)
    return model, XLMRobertaTokenizer.from_pretrained(STUDENT)


def make_distill(teacher_dir: Path) -> dict:
    from transformers import CLIPModel, CLIPTokenizer

    teacher = CLIPModel.from_pretrained(teacher_dir, attn_implementation="eager").eval()
    ttok = CLIPTokenizer.from_pretrained(teacher_dir)
    student, stok = load_student()
    hp = dict(steps=3, pairs_per_micro_batch=2, accumulation=2, lr=2e-3, beta1=0.9, beta2=0.98, eps=1e-6,
              weight_decay=0.1, clip_grad_norm=1.0, schedule="cosine", warmup_steps=0, total_steps=3,
              max_length=77)
    named = [(n, p) for n, p in student.named_parameters() if n.startswith("text_model.")]
    for _, p in named:
        p.requires_grad_(True)
    with torch.no_grad():
        en = [e for e, _ in PAIRS]
        tenc = ttok(en, padding=True, truncation=True, max_length=77, return_tensors="pt")
        targets = teacher.text_model(**tenc).pooler_output
    micro = hp["pairs_per_micro_batch"]
    batches = [list(range(i, i + micro)) for i in range(0, len(PAIRS), micro)]
    used = []

    def micro_losses(step):
        for b in batches[step * hp["accumulation"]:(step + 1) * hp["accumulation"]]:
            texts = [PAIRS[i][0] for i in b] + [PAIRS[i][1] for i in b]
            enc = stok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
            used.extend(enc["input_ids"].flatten().tolist())
            out = student.text_model(**enc).pooler_output
            yield torch.nn.functional.mse_loss(out, targets[b + b])

    result = run_steps(named, hp, micro_losses)
    after = save_after(named, used, 40, OUT / "distill_after.safetensors")
    assert result["grad_norms"][0] > hp["clip_grad_norm"], "clipping should be exercised"
    return {
        "hyper_parameters": hp,
        "pairs": [list(p) for p in PAIRS],
        "micro_batches": batches,
        "student_ids": [stok(list(p))["input_ids"] for p in PAIRS],
        "teacher_ids": [ttok(e)["input_ids"] for e, _ in PAIRS],
        "teacher_targets": targets.numpy(),
        **result,
        **after,
    }


def make_contrastive() -> dict:
    student, stok = load_student()
    hp = dict(steps=3, batch_size=4, accumulation=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.05, clip_grad_norm=0.5, schedule="linear", warmup_steps=1, total_steps=4,
              max_length=77)
    from transformers import AltCLIPProcessor

    proc = AltCLIPProcessor.from_pretrained(STUDENT, backend="pil")
    with torch.no_grad():
        feats = []
        for name, _ in CAPTIONS:
            pv = proc(images=open_for_reference(FIX / "images" / name), return_tensors="pt")["pixel_values"]
            feats.append(student.get_image_features(pixel_values=pv).pooler_output[0])
        image_features = torch.stack(feats)
    named = [(n, p) for n, p in student.named_parameters()
             if n.startswith("text_model.") or n == "text_projection.weight"]
    for _, p in named:
        p.requires_grad_(True)
    used = []
    bs = hp["batch_size"]

    def micro_losses(step):
        idx = list(range(step * bs, (step + 1) * bs))
        enc = stok([CAPTIONS[i][1] for i in idx], padding=True, truncation=True, max_length=77,
                   return_tensors="pt")
        used.extend(enc["input_ids"].flatten().tolist())
        t = student.get_text_features(**enc).pooler_output
        t = t / t.norm(dim=-1, keepdim=True)
        im = image_features[idx] / image_features[idx].norm(dim=-1, keepdim=True)
        logits = student.logit_scale.exp() * t @ im.T
        labels = torch.arange(len(idx))
        yield (torch.nn.functional.cross_entropy(logits, labels)
               + torch.nn.functional.cross_entropy(logits.T, labels)) / 2

    result = run_steps(named, hp, micro_losses)
    after = save_after(named, used, 40, OUT / "contrastive_after.safetensors")
    assert result["grad_norms"][1] > hp["clip_grad_norm"], "clipping should be exercised"
    return {
        "hyper_parameters": hp,
        "captions": [list(c) for c in CAPTIONS],
        "ids": [stok(c)["input_ids"] for _, c in CAPTIONS],
        "image_features": image_features.numpy(),
        "logit_scale": float(student.logit_scale),
        **result,
        **after,
    }


def make_schedules() -> dict:
    out = {}
    for kind in ("cosine", "linear"):
        for warmup, total in ((3, 10), (0, 7), (5, 5)):
            p = torch.nn.Parameter(torch.zeros(1))
            opt = torch.optim.AdamW([p], lr=0.5)
            sched = schedule(opt, {"schedule": kind, "warmup_steps": warmup, "total_steps": total})
            lrs = []
            for _ in range(total + 2):
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sched.step()
            out[f"{kind}_{warmup}_{total}"] = {"base": 0.5, "warmup": warmup, "total": total, "lrs": lrs}
    return out


def main() -> int:
    deterministic_setup()
    assert (STUDENT / "model.safetensors").is_file(), "run scripts/make_fixtures.py first"
    if OUT.exists():
        import shutil

        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    teacher_dir = OUT / "clip-tiny"
    ref = make_teacher(teacher_dir)
    write_json(teacher_dir / "reference.json", ref)
    write_json(OUT / "distill.json", make_distill(teacher_dir))
    write_json(OUT / "contrastive.json", make_contrastive())
    write_json(OUT / "schedules.json", make_schedules())
    for p in OUT.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o644)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"tests/fixtures/train: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
