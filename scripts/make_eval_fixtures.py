#!/usr/bin/env python3
"""Generate the golden fixtures for the evaluation part (zero-shot classification / retrieval) of the
Rust AltCLIP re-implementation.

Everything is written under ``tests/fixtures/eval/`` (the directory is deleted and rebuilt) and is fully
deterministic (fixed seeds; two runs give byte-identical files).  Run from anywhere:

    /work/venv/bin/python scripts/make_eval_fixtures.py
    # or, in a fresh environment:
    pip install -r scripts/requirements.txt && python scripts/make_eval_fixtures.py

It needs ``tests/fixtures/tiny-224/`` (made by ``scripts/make_fixtures.py``) and re-uses that script's
helpers (float formatting, model loading, PIL-backend processor, image opening).

Layout (see tests/fixtures/eval/README.md):

    metrics.json      pure metric cases (no model): retrieval recall@k and classification acc1/acc5/
                      mean_per_class_recall, computed with the numpy reference implementations below
    data/             tiny synthetic dataset: ImageFolder tree (+ a corrupt PNG), labels.csv,
                      classnames.json, templates.json, retrieval images + captions in 4 formats x 2 languages
    reference.json    end-to-end references with the tiny-224 model (transformers, eager, fp32)

Metric conventions (LAION CLIP_benchmark formulas, with our documented tie rule):

* ranking = score descending, ties broken by the LOWER index first
  (``np.argsort(-scores, axis=1, kind="stable")``); top-k = the first min(k, #candidates) of that order.
* retrieval: embeddings L2-normalised, ``scores = text @ image.T``;
  ``image_retrieval_recall@k`` (text->image) = mean over texts of [its image in the top-k images];
  ``text_retrieval_recall@k`` (image->text) = mean over images of [ANY of its captions in the top-k texts];
  ``mean_recall`` = mean of all the reported recalls (both directions, all ks).
* classification: ``acc1`` = mean(argmax == target) (argmax ties -> lowest index); ``acc5`` = mean(target in
  top-5) or null when there are fewer than 5 classes; ``mean_per_class_recall`` = sklearn
  ``balanced_accuracy_score(targets, argmax)`` = mean over the classes PRESENT IN targets of per-class recall.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import PIL
import torch
import transformers
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import (  # noqa: E402  (re-use the conventions of the main fixture script)
    deterministic_setup,
    check_loading,
    load_processor,
    manual_pixel_values,
    open_for_reference,
    to_json,
)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = FIX / "eval"
DATA = OUT / "data"
MODEL_DIR = FIX / "tiny-224"
SCRIPT_REL = "scripts/make_eval_fixtures.py"

# Minimum distance between a decisive score and any competing score: every stored metric must be stable
# under the ~1e-6 float32 noise of an independent implementation.
MIN_COSINE_MARGIN = 1e-4


# --------------------------------------------------------------------------------------------------
# Reference metric implementations (plain numpy)
# --------------------------------------------------------------------------------------------------


def ranking(scores: np.ndarray) -> np.ndarray:
    """Per row: candidate indices by score descending, ties -> lower index first."""
    return np.argsort(-scores, axis=1, kind="stable")


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    return ranking(scores)[:, : min(k, scores.shape[1])]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def retrieval_metrics(text_emb, image_emb, text_to_image, ks, dtype=np.float64) -> dict:
    t = l2_normalize(np.asarray(text_emb, dtype))
    i = l2_normalize(np.asarray(image_emb, dtype))
    t2i = np.asarray(text_to_image)
    assert t2i.shape == (t.shape[0],) and t2i.min() >= 0 and t2i.max() < i.shape[0]
    assert len(set(t2i.tolist())) == i.shape[0], "every image needs at least one caption"
    scores = t @ i.T  # [texts, images]
    positive = np.zeros(scores.shape, bool)
    positive[np.arange(len(t2i)), t2i] = True
    metrics = {}
    for k in ks:
        top_i = topk(scores, k)  # texts -> images
        metrics[f"image_retrieval_recall@{k}"] = float(
            np.take_along_axis(positive, top_i, axis=1).any(axis=1).mean())
        top_t = topk(scores.T, k)  # images -> texts
        metrics[f"text_retrieval_recall@{k}"] = float(
            np.take_along_axis(positive.T, top_t, axis=1).any(axis=1).mean())
    metrics["mean_recall"] = float(np.mean(list(metrics.values())))
    return metrics


def classification_metrics(logits, targets) -> dict:
    logits = np.asarray(logits)
    targets = np.asarray(targets)
    n, c = logits.shape
    assert targets.shape == (n,)
    order = ranking(logits)
    pred = order[:, 0]
    acc1 = float((pred == targets).mean())
    acc5 = None if c < 5 else float((order[:, :5] == targets[:, None]).any(axis=1).mean())
    recalls = [float((pred[targets == cls] == cls).mean()) for cls in np.unique(targets)]
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": float(np.mean(recalls))}


# ---- margins / alternative tie rules (used only for self-checks) ---------------------------------


def _decision_margin(scores: np.ndarray, positive: np.ndarray) -> float:
    """min |s_pos - s_neg| over rows, positives and non-positives: no hit/miss decision can flip while
    every score moves by less than half of this."""
    m = np.inf
    for s, p in zip(scores, positive):
        if p.any() and (~p).any():
            m = min(m, float(np.abs(s[p][:, None] - s[~p][None, :]).min()))
    return m


def retrieval_margin(text_emb, image_emb, text_to_image) -> float:
    t, i = l2_normalize(np.asarray(text_emb, np.float64)), l2_normalize(np.asarray(image_emb, np.float64))
    scores = t @ i.T
    positive = np.zeros(scores.shape, bool)
    positive[np.arange(len(text_to_image)), text_to_image] = True
    return min(_decision_margin(scores, positive), _decision_margin(scores.T, positive.T))


def argmax_margin(logits: np.ndarray) -> float:
    s = np.sort(np.asarray(logits, np.float64), axis=1)
    return float((s[:, -1] - s[:, -2]).min())


def _reverse_ties(fn, *args):
    """Evaluate with the opposite tie rule (higher index first) by reversing the candidate order."""
    global ranking
    orig = ranking
    ranking = lambda s: (s.shape[1] - 1 - np.argsort(-s[:, ::-1], axis=1, kind="stable"))  # noqa: E731
    try:
        return fn(*args)
    finally:
        ranking = orig


# ---- optional cross-checks against the original CLIP_benchmark code paths --------------------------


def clip_benchmark_recall(text_emb, image_emb, text_to_image, ks) -> dict:
    """CLIP_benchmark zeroshot_retrieval.recall_at_k (torch.topk), with k clamped. Valid without ties."""
    import torch.nn.functional as F

    t = F.normalize(torch.tensor(np.asarray(text_emb, np.float64)), dim=-1)
    i = F.normalize(torch.tensor(np.asarray(image_emb, np.float64)), dim=-1)
    scores = t @ i.T
    positive_pairs = torch.zeros_like(scores, dtype=torch.bool)
    positive_pairs[torch.arange(len(text_to_image)), torch.tensor(text_to_image)] = True

    def recall_at_k(scores, positive_pairs, k):
        nb_texts, nb_images = scores.shape
        topk_indices = torch.topk(scores, min(k, nb_images), dim=1)[1]
        nb_positive = positive_pairs.sum(dim=1)
        onehot = F.one_hot(topk_indices, num_classes=nb_images)
        nb_true_positive = (onehot * positive_pairs.view(nb_texts, 1, nb_images)).sum(dim=(1, 2))
        return nb_true_positive / nb_positive

    out = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = (recall_at_k(scores, positive_pairs, k) > 0).float().mean().item()
        out[f"text_retrieval_recall@{k}"] = (recall_at_k(scores.T, positive_pairs.T, k) > 0).float().mean().item()
    return out


def cross_check_classification(logits, targets, m) -> None:
    pred = np.argmax(logits, axis=1)
    try:
        from sklearn.metrics import balanced_accuracy_score
    except ImportError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = balanced_accuracy_score(targets, pred)
    assert abs(ref - m["mean_per_class_recall"]) < 1e-12, (ref, m)


# --------------------------------------------------------------------------------------------------
# 1. metrics.json
# --------------------------------------------------------------------------------------------------


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def retrieval_case(name, text_emb, image_emb, t2i, ks, *, tie_sensitive=False) -> dict:
    text_emb, image_emb = f32(text_emb), f32(image_emb)
    m = retrieval_metrics(text_emb, image_emb, t2i, ks)
    m32 = retrieval_metrics(text_emb, image_emb, t2i, ks, dtype=np.float32)
    assert m == m32, (name, m, m32)
    if tie_sensitive:
        assert _reverse_ties(retrieval_metrics, text_emb, image_emb, t2i, ks) != m, name
    else:
        assert retrieval_margin(text_emb, image_emb, t2i) > MIN_COSINE_MARGIN, name
        cb = clip_benchmark_recall(text_emb, image_emb, t2i, ks)
        for k, v in cb.items():
            assert abs(v - m[k]) < 1e-6, (name, k, v, m[k])  # torch: float32 mean
    return {"name": name, "text_emb": text_emb, "image_emb": image_emb, "text_to_image": list(map(int, t2i)),
            "ks": list(ks), "metrics": m}


def classification_case(name, logits, targets, *, tie_sensitive=False) -> dict:
    logits = f32(logits)
    m = classification_metrics(logits, targets)
    cross_check_classification(logits, np.asarray(targets), m)
    # np.argmax also returns the first (lowest) index of tied maxima
    assert np.array_equal(ranking(logits)[:, 0], np.argmax(logits, axis=1)), name
    if tie_sensitive:
        assert _reverse_ties(classification_metrics, logits, targets) != m, name
    else:
        assert argmax_margin(logits) > 1e-3, name
    return {"name": name, "logits": logits, "targets": list(map(int, targets)), "metrics": m}


def make_metric_cases() -> dict:
    rng = np.random.default_rng(20240607)
    retrieval = []

    # (a) random 8-dim embeddings, 6 images x 2-3 captions (uneven), captions not in image order
    counts = [2, 3, 3, 2, 3, 2]
    t2i = np.repeat(np.arange(6), counts)
    t2i = t2i[rng.permutation(len(t2i))]
    image_emb = rng.standard_normal((6, 8))
    # captions = noisy copies of their image, so the recalls are neither all 0 nor all 1
    text_emb = image_emb[t2i] * 0.6 + rng.standard_normal((len(t2i), 8))
    retrieval.append(retrieval_case("random_6img_uneven_captions", text_emb, image_emb, t2i, [1, 2, 5]))

    # (b) exact ties. Integer vectors whose norm is 1, 2 or 4, so the normalised vectors and all dot
    # products are exact in float32 whatever the summation order. Images 1 and 3 are identical; texts 1 and
    # 2 are identical (text 2 belongs to image 3); text 4 is equidistant from images 0 and 4.
    image_emb = [
        [2, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 4, 0, 0],
    ]
    text_emb = [
        [3, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 2, 2, 2, 2],
        [1, 0, 0, 0, 0, 1, 1, 1],
        [0, 0, 0, 0, 0, 2, 0, 0],
        [0, -1, 0, 0, 0, 0, 0, 0],
    ]
    t2i = [0, 1, 3, 2, 4, 4, 3]
    retrieval.append(retrieval_case("exact_ties_duplicates", text_emb, image_emb, t2i, [1, 2], tie_sensitive=True))

    # (c) k larger than the number of candidates (3 images, 5 texts): k is clamped
    image_emb = rng.standard_normal((3, 8))
    t2i = np.array([0, 1, 2, 0, 2])
    text_emb = image_emb[t2i] * 0.3 + rng.standard_normal((5, 8))
    retrieval.append(retrieval_case("k_larger_than_n", text_emb, image_emb, t2i, [1, 5, 10]))

    classification = []
    # (d) random logits 20 x 7
    logits = rng.standard_normal((20, 7)) * 2.0
    targets = rng.integers(0, 7, size=20)
    logits[np.arange(20), targets] += 1.5  # some signal
    classification.append(classification_case("random_20x7", logits, targets))

    # (e) exact ties in the logits (top-1 and at the top-5 boundary)
    logits = [
        [1, 3, 3, 0, 0, 0],  # argmax tie 1 vs 2 -> 1 (target 1: hit)
        [1, 3, 3, 0, 0, 0],  # same row, target 2: top-1 miss, top-5 hit
        [2, 2, 2, 2, 2, 2],  # all tied: top-5 = 0..4, target 5: miss for both
        [2, 2, 2, 2, 2, 2],  # all tied, target 4: top-1 miss, top-5 hit
        [2, 2, 2, 2, 2, 2],  # all tied, target 0: hit
        [0, 5, 1, 1, 1, 1],  # top-5 = 1,2,3,4,5 (ties at the boundary keep 2..5, drop 0); target 0: miss
        [5, 4, 4, 4, 4, 4],  # top-5 = 0,1,2,3,4; target 5: miss
        [-1, -1, 0, -2, 0, 7],  # clean argmax 5, target 5
    ]
    targets = [1, 2, 5, 4, 0, 0, 5, 5]
    classification.append(classification_case("exact_ties", logits, targets, tie_sensitive=True))

    # (f) 3 classes: acc5 is null
    logits = rng.standard_normal((10, 3))
    targets = rng.integers(0, 3, size=10)
    classification.append(classification_case("three_classes_acc5_null", logits, targets))

    # (g) 6 classes: class 4 never appears in targets (but is predicted twice), class 2 appears in targets
    # but is never predicted -> mean over the 5 present classes only (sklearn balanced_accuracy_score)
    targets = np.array([0, 0, 1, 1, 1, 2, 2, 3, 3, 5, 5, 5])
    preds = np.array([0, 4, 1, 1, 3, 0, 4, 3, 3, 5, 1, 5])
    assert 4 not in targets and 2 not in preds
    logits = rng.standard_normal((12, 6)) * 0.5
    logits[np.arange(12), preds] = 3.0 + rng.random(12)
    case = classification_case("absent_class_and_never_predicted", logits, targets)
    assert np.array_equal(np.argmax(case["logits"], axis=1), preds)
    naive = np.mean([np.mean(preds[targets == c] == c) if (targets == c).any() else 0.0 for c in range(6)])
    assert abs(naive - case["metrics"]["mean_per_class_recall"]) > 0.05
    classification.append(case)

    return {"retrieval": retrieval, "classification": classification}


# --------------------------------------------------------------------------------------------------
# 2. synthetic dataset
# --------------------------------------------------------------------------------------------------

CLASSES = ["bird", "cat", "dog"]  # torchvision ImageFolder order (sorted directory names)
CLASSNAMES = {"en": ["bird", "cat", "dog"], "zh": ["鸟", "猫", "狗"]}
TEMPLATES = ["a photo of a {c}.", "{c}的照片。", "a blurry picture of the {c}"]
PREFIX = {"bird": "b", "cat": "c", "dog": "d"}

W, H = 48, 40
DATASET_SEED = 4242


def _noise(rng, arr, sigma):
    return np.clip(np.round(arr + rng.normal(0, sigma, arr.shape)), 0, 255).astype(np.uint8)


def make_class_image(cls: str, idx: int, rng: np.random.Generator) -> Image.Image:
    """Three scene variants per class (idx 0/1/2), so the content varies within a class too."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    if cls == "bird":  # sky (day / sunset / overcast) with a few dark "birds"
        skies = [((120, 100), (170, 70), (250, -10)), ((250, -40), (150, -60), (90, 40)), ((150, 40), (155, 40), (165, 40))]
        base = np.stack([a + b * yy / H for a, b in skies[idx]], -1)
        im = Image.fromarray(_noise(rng, base, 3.0), "RGB")
        d = ImageDraw.Draw(im)
        for _ in range(2 + idx):
            x, y = int(rng.integers(4, W - 10)), int(rng.integers(3, H - 12))
            d.line([(x, y), (x + 4, y + 3), (x + 8, y)], fill=(20, 20, 30), width=2)
    elif cls == "cat":  # textured background (warm / dark / pale), orange-ish face with ears
        backs = [(200, 160, 120), (40, 40, 60), (235, 235, 220)]
        r0, g0, b0 = backs[idx]
        base = np.stack([r0 + 25 * np.sin(xx / 7), g0 + 15 * np.cos(yy / 5), b0 + 0 * xx], -1)
        im = Image.fromarray(_noise(rng, base, 6.0), "RGB")
        d = ImageDraw.Draw(im)
        cx, cy, r = 24 + int(rng.integers(-6, 7)), 22 + int(rng.integers(-3, 4)), 11 + idx
        col = [(230, 120, 30), (200, 200, 200), (90, 60, 40)][idx]
        d.polygon([(cx - r, cy - 2), (cx - r + 3, cy - r - 6), (cx - 2, cy - r + 2)], fill=col)
        d.polygon([(cx + r, cy - 2), (cx + r - 3, cy - r - 6), (cx + 2, cy - r + 2)], fill=col)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        d.ellipse([cx - 5, cy - 3, cx - 2, cy], fill=(0, 90, 0))
        d.ellipse([cx + 2, cy - 3, cx + 5, cy], fill=(0, 90, 0))
    else:  # dog on the ground (grass / snow / sand), with a brown/black/white body
        grounds = [(40, 150, 40), (235, 240, 250), (210, 180, 110)]
        sky = np.stack([190 + 0 * xx, 210 + 0 * xx, 230 + 0 * xx], -1)
        g = grounds[idx]
        ground = np.stack([g[0] + 0 * xx, g[1] + 20 * np.sin(xx / 3), g[2] + 0 * xx], -1)
        base = np.where((yy > 26)[..., None], ground, sky)
        im = Image.fromarray(_noise(rng, base, 5.0), "RGB")
        d = ImageDraw.Draw(im)
        x0 = 8 + int(rng.integers(0, 10))
        col = [(130, 75, 30), (25, 25, 25), (245, 245, 245)][idx]
        d.rectangle([x0, 16, x0 + 22, 28], fill=col)  # body
        d.rectangle([x0 + 18, 9, x0 + 28, 19], fill=col)  # head
        for lx in (x0 + 1, x0 + 6, x0 + 15, x0 + 20):
            d.rectangle([lx, 28, lx + 2, 35], fill=col)
    return im


# Retrieval images r0..r5 and their captions (per-image order matters).
CAPTIONS = {
    "en": [
        ["a red circle on a blue background", "A big red ball, centered, in front of a dark blue wall.",
         "red disc over blue"],
        ["a green square on a white background", "A small green box, drawn in the middle of a white page."],
        ["a yellow triangle on a black background", "A bright yellow shape with three corners, on black.",
         "yellow pyramid at night"],
        ["horizontal red and white stripes", "A striped pattern, like a flag, with red and white bands."],
        ["a black and white checkerboard", "A chess board pattern: black squares, white squares."],
        ["random colourful noise", "A noisy image with pixels of every colour, like TV static.",
         "static, grain, noise"],
    ],
    "zh": [
        ["蓝色背景上的一个红色圆形", "一个大红球, 在深蓝色的墙前面。"],
        ["白色背景上的一个绿色正方形", "一个小绿盒子，画在白纸中间。", "白纸上的绿方块"],
        ["黑色背景上的一个黄色三角形", "一个明亮的黄色三角形, 在黑色上面。"],
        ["红白相间的横条纹", "条纹图案，像一面旗子，有红色和白色的条带。", "红色, 白色, 红色, 白色"],
        ["黑白棋盘格", "国际象棋棋盘的图案, 黑格子和白格子。"],
        ["随机的彩色噪声", "一张噪点很多的图片，像电视雪花一样。"],
    ],
}
RETRIEVAL_IMAGES = [f"r{i}.png" for i in range(6)]
COCO_IMAGE_IDS = [42, 7, 19, 3, 88, 15]  # deliberately unsorted: image order = order of the "images" list


def make_retrieval_image(i: int, rng: np.random.Generator) -> Image.Image:
    if i == 0:  # red circle on blue, 48x40
        im = Image.new("RGB", (48, 40), (20, 40, 160))
        ImageDraw.Draw(im).ellipse([12, 8, 36, 32], fill=(220, 20, 20))
    elif i == 1:  # green square on white, 40x48 (portrait)
        im = Image.new("RGB", (40, 48), (250, 250, 250))
        ImageDraw.Draw(im).rectangle([10, 14, 29, 33], fill=(30, 180, 40))
    elif i == 2:  # yellow triangle on black
        im = Image.new("RGB", (48, 40), (0, 0, 0))
        ImageDraw.Draw(im).polygon([(8, 34), (24, 5), (40, 34)], fill=(250, 220, 0))
    elif i == 3:  # horizontal red/white stripes, 56x40
        a = np.zeros((40, 56, 3), np.uint8)
        red = (np.arange(40) // 5) % 2 == 0
        a[red] = (200, 20, 30)
        a[~red] = (245, 245, 245)
        im = Image.fromarray(a, "RGB")
    elif i == 4:  # black/white checkerboard, mode L, 48x48
        yy, xx = np.mgrid[0:48, 0:48]
        im = Image.fromarray((((yy // 8 + xx // 8) % 2) * 255).astype(np.uint8), "L")
    else:  # colourful noise
        im = Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8), "RGB")
    return im


def _line_safe(s: str) -> None:
    assert "\t" not in s and "\n" not in s and "\r" not in s and '"' not in s, s


def make_dataset() -> dict:
    rng = np.random.default_rng(DATASET_SEED)
    DATA.mkdir(parents=True)
    # ImageFolder tree
    samples, targets = [], []
    for label, cls in enumerate(CLASSES):
        d = DATA / "imagefolder" / cls
        d.mkdir(parents=True)
        for idx in range(3):
            name = f"{PREFIX[cls]}{idx}.png"
            make_class_image(cls, idx, rng).save(d / name)
            samples.append(f"imagefolder/{cls}/{name}")
            targets.append(label)
    broken = DATA / "imagefolder" / "dog" / "broken.png"
    broken.write_bytes((DATA / "imagefolder" / "cat" / "c1.png").read_bytes()[:60])
    try:
        Image.open(broken).load()
        raise AssertionError("broken.png decoded")
    except (OSError, SyntaxError):
        pass
    # the ImageFolder order (sorted class dirs, sorted file names, broken.png excluded)
    found = [str(p.relative_to(DATA)) for c in sorted(os.listdir(DATA / "imagefolder"))
             for p in sorted((DATA / "imagefolder" / c).iterdir()) if p.name != "broken.png"]
    assert found == samples, (found, samples)

    with open(DATA / "labels.csv", "w", encoding="utf-8", newline="") as f:
        f.write("path,label\n")
        for s, t in zip(samples, targets):
            f.write(f"{s},{t}\n")
    (DATA / "classnames.json").write_text(json.dumps(CLASSNAMES, ensure_ascii=False) + "\n", encoding="utf-8")
    (DATA / "templates.json").write_text(json.dumps(TEMPLATES, ensure_ascii=False) + "\n", encoding="utf-8")

    # Retrieval
    rdir = DATA / "retrieval"
    (rdir / "images").mkdir(parents=True)
    for i, name in enumerate(RETRIEVAL_IMAGES):
        make_retrieval_image(i, rng).save(rdir / "images" / name)
    shuffle_rng = random.Random(777)
    for lang, caps in CAPTIONS.items():
        assert len(caps) == len(RETRIEVAL_IMAGES) and all(len(c) in (2, 3) for c in caps)
        assert len({len(c) for c in caps}) == 2  # uneven
        for cs in caps:
            for c in cs:
                _line_safe(c)
        # Karpathy (with one train image that must be ignored, placed in the middle)
        entries = [{"filename": n, "split": "test", "sentences": [{"raw": c} for c in cs]}
                   for n, cs in zip(RETRIEVAL_IMAGES, caps)]
        train = {"filename": "train_only.png", "split": "train",
                 "sentences": [{"raw": "this image is in the train split" if lang == "en" else "训练集里的图片"},
                               {"raw": "ignore me" if lang == "en" else "忽略我"}]}
        entries.insert(3, train)
        (rdir / f"karpathy_{lang}.json").write_text(
            json.dumps({"images": entries}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        # CLIP_benchmark txt: header + "name,caption", grouped per image
        lines = ["image,caption"] + [f"{n},{c}" for n, cs in zip(RETRIEVAL_IMAGES, caps) for c in cs]
        with open(rdir / f"clip_benchmark_{lang}.txt", "w", encoding="utf-8", newline="") as f:
            f.write("\n".join(lines) + "\n")
        # COCO captions: annotations shuffled, per-image relative order kept (annotation ids increase with
        # the per-image caption order, so "list order" and "sorted by id" agree)
        ann_ids = iter(range(1001, 1100))
        per_image = [[{"id": next(ann_ids), "image_id": iid, "caption": c} for c in cs]
                     for iid, cs in zip(COCO_IMAGE_IDS, caps)]
        slots = [i for i, cs in enumerate(per_image) for _ in cs]
        shuffle_rng.shuffle(slots)
        cursors = [0] * len(per_image)
        anns = []
        for i in slots:
            anns.append(per_image[i][cursors[i]])
            cursors[i] += 1
        coco = {"images": [{"id": iid, "file_name": n} for iid, n in zip(COCO_IMAGE_IDS, RETRIEVAL_IMAGES)],
                "annotations": anns}
        (rdir / f"coco_{lang}.json").write_text(json.dumps(coco, ensure_ascii=False, indent=1) + "\n",
                                                encoding="utf-8")
        # TSV: no header, captions interleaved round-robin (first appearance order = image order)
        rows = [f"{RETRIEVAL_IMAGES[i]}\t{caps[i][j]}" for j in range(3) for i in range(len(caps)) if j < len(caps[i])]
        with open(rdir / f"captions_{lang}.tsv", "w", encoding="utf-8", newline="") as f:
            f.write("\n".join(rows) + "\n")
        # all four formats must parse to the same thing
        ref = [(n, list(cs)) for n, cs in zip(RETRIEVAL_IMAGES, caps)]
        for fmt in ("karpathy", "clip_benchmark", "coco", "tsv"):
            assert parse_captions(rdir, lang, fmt) == ref, (lang, fmt)
    return {"samples": samples, "targets": targets}


def parse_captions(rdir: Path, lang: str, fmt: str) -> list[tuple[str, list[str]]]:
    """Independent readers of the four caption formats (self-check of the written files)."""
    out: dict[str, list[str]] = {}
    if fmt == "karpathy":
        for e in json.loads((rdir / f"karpathy_{lang}.json").read_text(encoding="utf-8"))["images"]:
            if e["split"] == "test":
                out[e["filename"]] = [s["raw"] for s in e["sentences"]]
    elif fmt == "clip_benchmark":
        lines = (rdir / f"clip_benchmark_{lang}.txt").read_text(encoding="utf-8").splitlines()
        assert lines[0] == "image,caption"
        for line in lines[1:]:
            name, cap = line.split(",", 1)
            out.setdefault(name, []).append(cap)
    elif fmt == "coco":
        coco = json.loads((rdir / f"coco_{lang}.json").read_text(encoding="utf-8"))
        by_id = {im["id"]: im["file_name"] for im in coco["images"]}
        for im in coco["images"]:
            out[im["file_name"]] = []
        for a in coco["annotations"]:
            out[by_id[a["image_id"]]].append(a["caption"])
    else:
        for line in (rdir / f"captions_{lang}.tsv").read_text(encoding="utf-8").splitlines():
            name, cap = line.split("\t")
            out.setdefault(name, []).append(cap)
    return list(out.items())


# --------------------------------------------------------------------------------------------------
# 3. reference.json (tiny-224, transformers, eager, fp32)
# --------------------------------------------------------------------------------------------------


def make_reference(dataset: dict, versions: dict) -> dict:
    model = check_loading(MODEL_DIR)
    proc = load_processor(MODEL_DIR, None)
    tok = proc.tokenizer
    pp = json.loads((MODEL_DIR / "preprocessor_config.json").read_text())
    se, crop = pp["size"]["shortest_edge"], pp["crop_size"]["height"]

    @torch.no_grad()
    def text_features(texts: list[str]) -> torch.Tensor:
        inputs = tok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        feats = model.get_text_features(**inputs).pooler_output
        # batching/padding must not matter beyond float noise
        for i, t in enumerate(texts):
            one = model.get_text_features(**tok([t], truncation=True, max_length=77, return_tensors="pt")).pooler_output[0]
            assert torch.allclose(one, feats[i], atol=2e-5, rtol=1e-5), t
        return feats

    @torch.no_grad()
    def image_features(paths: list[Path]) -> torch.Tensor:
        imgs = [open_for_reference(p) for p in paths]
        pv = proc(images=imgs, return_tensors="pt")["pixel_values"]
        assert pv.shape == (len(paths), 3, crop, crop) and pv.dtype == torch.float32
        for k, p in enumerate(paths):
            manual = manual_pixel_values(open_for_reference(p), se, crop)
            assert np.array_equal(manual, pv[k].numpy()), p
        feats = model.get_image_features(pixel_values=pv).pooler_output
        for k in range(len(paths)):
            one = model.get_image_features(pixel_values=pv[k:k + 1]).pooler_output[0]
            assert torch.allclose(one, feats[k], atol=2e-5, rtol=1e-5), paths[k]
        return feats

    def norm(x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    samples, targets = dataset["samples"], dataset["targets"]
    img = norm(image_features([DATA / s for s in samples]))
    ref: dict = {"versions": versions, "script": SCRIPT_REL, "model": "tiny-224", "attn_implementation": "eager"}

    # zero-shot classification
    zs, margins = {}, {}
    class_emb = {}
    for lang in ("en", "zh"):
        names = CLASSNAMES[lang]
        texts = [t.format(c=n) for n in names for t in TEMPLATES]
        tf = norm(text_features(texts)).reshape(len(names), len(TEMPLATES), -1)
        cls = norm(tf.mean(dim=1))
        class_emb[lang] = cls
        logits = (100.0 * img @ cls.T).numpy()
        m = classification_metrics(logits, targets)
        cross_check_classification(logits, np.asarray(targets), m)
        margins[lang] = argmax_margin(logits)
        assert margins[lang] > 100 * MIN_COSINE_MARGIN, (lang, margins[lang])
        zs[lang] = {"metrics": m, "class_embeddings": cls.numpy(), "logits": logits, "targets": targets,
                    "samples": samples}
    ref["zeroshot"] = zs

    # classify: softmax(exp(logit_scale) * cosine) over the en class embeddings
    scale = float(model.logit_scale.exp().item())
    probs = torch.softmax(scale * (img @ class_emb["en"].T), dim=-1).numpy()
    ref["classify"] = {"images": samples, "logit_scale": float(model.logit_scale.item()), "probs": probs}

    # retrieval
    rt, rmargins = {}, {}
    rimg_raw = image_features([DATA / "retrieval" / "images" / n for n in RETRIEVAL_IMAGES])
    for lang, caps in CAPTIONS.items():
        texts = [c for cs in caps for c in cs]
        t2i = [i for i, cs in enumerate(caps) for _ in cs]
        tfeat = text_features(texts)
        ks = [1, 5, 10]
        m = retrieval_metrics(tfeat.numpy(), rimg_raw.numpy(), t2i, ks)
        assert m == retrieval_metrics(tfeat.numpy(), rimg_raw.numpy(), t2i, ks, dtype=np.float32)
        rmargins[lang] = retrieval_margin(tfeat.numpy(), rimg_raw.numpy(), t2i)
        assert rmargins[lang] > MIN_COSINE_MARGIN, (lang, rmargins[lang])
        cb = clip_benchmark_recall(tfeat.numpy(), rimg_raw.numpy(), t2i, ks)
        assert all(abs(v - m[k]) < 1e-6 for k, v in cb.items()), (cb, m)
        rt[lang] = {"metrics": m, "num_images": len(RETRIEVAL_IMAGES), "num_texts": len(texts),
                    "images": RETRIEVAL_IMAGES, "texts": texts, "text_to_image": t2i,
                    "text_features": tfeat.numpy(), "image_features": rimg_raw.numpy()}
    ref["retrieval"] = rt
    ref["margins"] = {"zeroshot_min_top1_minus_top2_logit": margins,
                      "retrieval_min_positive_vs_negative_cosine_gap": rmargins}
    return ref


# --------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    deterministic_setup()
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "pillow": PIL.__version__, "numpy": np.__version__}

    readme = (OUT / "README.md").read_bytes() if (OUT / "README.md").exists() else None
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    if readme is not None:  # hand-written, kept across regenerations
        (OUT / "README.md").write_bytes(readme)

    cases = make_metric_cases()
    parts = []
    for key in ("retrieval", "classification"):
        body = ",\n".join("    " + to_json(c, 0, 0) for c in cases[key])
        parts.append(f'  "{key}": [\n{body}\n  ]')
    (OUT / "metrics.json").write_text("{\n" + ",\n".join(parts) + "\n}\n", encoding="utf-8")
    for key in ("retrieval", "classification"):
        for c in cases[key]:
            print(f"metrics.json {key} {c['name']}: {c['metrics']}")

    dataset = make_dataset()
    ref = make_reference(dataset, versions)
    (OUT / "reference.json").write_text(to_json(ref, 0, 2) + "\n", encoding="utf-8")
    for lang in ("en", "zh"):
        print(f"zeroshot {lang}: {ref['zeroshot'][lang]['metrics']}")
    for lang in ("en", "zh"):
        print(f"retrieval {lang}: {ref['retrieval'][lang]['metrics']}")
    print("margins:", ref["margins"])

    # the JSON must parse back to the stored float32 values
    back = json.loads((OUT / "reference.json").read_text(encoding="utf-8"))
    assert np.array_equal(np.float32(back["classify"]["probs"]), ref["classify"]["probs"])
    json.loads((OUT / "metrics.json").read_text(encoding="utf-8"))
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"total eval fixture size: {total / 1e3:.1f} KB")
    assert total < 600_000
    return 0


if __name__ == "__main__":
    sys.exit(main())
