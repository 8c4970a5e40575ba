#!/usr/bin/env python3
"""Generate the golden test fixtures for the Rust AltCLIP re-implementation.

Everything is written under ``tests/fixtures/`` (relative to the repository root) and is fully
deterministic: the SentencePiece model, the synthetic images, the random model weights (fixed torch
seeds) and therefore the reference outputs computed with HF transformers.

Run from anywhere:

    /work/venv/bin/python scripts/make_fixtures.py
    # or, in a fresh environment:
    pip install -r scripts/requirements.txt && python scripts/make_fixtures.py

Layout (see tests/fixtures/README.md for details):

    tests/fixtures/spm/        trained SentencePiece unigram model, converted tokenizer.json, tokenize.json
    tests/fixtures/images/     synthetic inputs (PNG in several modes, JPEG, WebP, GIF, BMP, TIFF, EXIF)
    tests/fixtures/rgb/        transformers' RGB conversion of the non-RGB inputs (alpha over white etc.)
    tests/fixtures/resize/     Pillow bicubic resize references + index.json
    tests/fixtures/tiny-224/   random-weight AltCLIP, hub layout, model.safetensors + tokenizer.json
    tests/fixtures/tiny-odd/   odd sizes, eps 1e-6, sharded safetensors + pytorch_model.bin, SentencePiece-only tokenizer
    tests/fixtures/tiny-m18/   projection 40, minimal config.json, tokenizer.json only

Notes on what transformers 5.24 does (verified by the assertions in this script):

* RGB conversion (``image_transforms.convert_to_rgb`` used by the PIL backend, do_convert_rgb=True):
  if ``"A" in img.getbands()`` (RGBA, LA, PA, ...) or ``img.info.get("transparency") is not None``
  (palette/L/RGB images with a tRNS chunk) the image is ``convert("RGBA")``-ed and alpha-composited
  over an opaque white background with ``PIL.Image.alpha_composite`` then ``convert("RGB")``;
  otherwise a plain ``img.convert("RGB")`` (L -> R=G=B, P -> palette lookup).
  NOTE: ``transformers.image_utils.load_image`` (used when passing a path/URL) does
  ``exif_transpose`` + a plain ``convert("RGB")`` BEFORE the processor sees it, i.e. it drops the alpha
  channel instead of compositing on white.  The references here pass the PIL image opened with
  ``Image.open`` + ``ImageOps.exif_transpose`` directly to the processor (so alpha IS composited).
* Resize: ``{"shortest_edge": S}`` with default_to_square=False -> short side = S,
  long side = int(S * long / short) (floor); square inputs -> (S, S).  Pillow ``Image.resize`` with
  ``resample=BICUBIC (3)`` and ``reducing_gap=None`` on the uint8 RGB image.
* Center crop: top = (H - h) // 2, left = (W - w) // 2 (zero padding only if the image is smaller).
* Rescale: ``uint8.astype(float64) * rescale_factor`` then cast to float32; normalize in float32:
  ``(x - mean_f32) / std_f32``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL
import sentencepiece as spm
import torch
import transformers
from PIL import Image, ImageDraw, ImageOps
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
SCRIPT_REL = "scripts/make_fixtures.py"

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# --------------------------------------------------------------------------------------------------
# JSON output helpers: float32 values are written with the shortest decimal that round-trips to the
# same float32 (numpy's str(np.float32)), and it is checked that parsing the text as float64 and then
# casting to float32 also gives the exact value (otherwise the 17-digit float64 repr is used).
# --------------------------------------------------------------------------------------------------


def f32_str(x) -> str:
    v = np.float32(x)
    if not np.isfinite(v):
        raise ValueError(f"non-finite value {v!r}")
    s = str(v)
    if np.float32(float(s)) != v:
        s = repr(float(v))
        assert np.float32(float(s)) == v
    return s


def to_json(obj, level: int = 0, indent_levels: int = 1) -> str:
    """Compact JSON, with one key per line for the first `indent_levels` dict levels."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            if obj.ndim == 1:
                return "[" + ",".join(f32_str(v) for v in obj) + "]"
            return "[" + ",".join(to_json(v, level + 1, indent_levels) for v in obj) + "]"
        return json.dumps(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return f32_str(obj)
    if isinstance(obj, (bool, np.bool_)):
        return "true" if obj else "false"
    if isinstance(obj, (int, np.integer)):
        return str(int(obj))
    if isinstance(obj, str) or obj is None:
        return json.dumps(obj, ensure_ascii=False)
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(to_json(v, level + 1, indent_levels) for v in obj) + "]"
    if isinstance(obj, dict):
        items = [json.dumps(str(k), ensure_ascii=False) + ":" + to_json(v, level + 1, indent_levels) for k, v in obj.items()]
        if level < indent_levels:
            pad = "\n" + "  " * (level + 1)
            return "{" + pad + ("," + pad).join(items) + "\n" + "  " * level + "}"
        return "{" + ",".join(items) + "}"
    raise TypeError(f"cannot serialise {type(obj)}")


def write_json(path: Path, obj, indent_levels: int = 1) -> None:
    path.write_text(to_json(obj, 0, indent_levels) + "\n", encoding="utf-8")


def write_pretty_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# 1. SentencePiece corpus + model
# --------------------------------------------------------------------------------------------------

CN_SUBJECTS = [
    "一只猫", "一只狗", "一只小猫", "一只小狗", "一个男人", "一个女人", "一群孩子", "一辆红色的汽车",
    "一只小鸟", "一个老人", "我的朋友", "这只熊猫", "一匹白马", "两只鸭子", "一个学生", "一位医生",
    "一只黑色的猫", "一只可爱的狗", "一架飞机", "一艘小船", "一棵大树", "一朵红花", "一个厨师", "我们",
]
CN_PLACES = [
    "在草地上", "在公园里", "在海边", "在城市的街道上", "在桌子上", "在雪地里", "在房间里", "在山上",
    "在河边", "在沙发上", "在厨房里", "在学校门口", "在天空中", "在森林里", "在花园里", "在床上",
]
CN_ACTIONS = [
    "玩耍", "睡觉", "奔跑", "吃东西", "看书", "唱歌", "跳舞", "休息", "散步", "游泳", "飞翔", "工作",
    "晒太阳", "喝水", "拍照", "等待",
]
CN_FACTS = [
    "北京是中国的首都。", "上海是一个很大的城市。", "今天天气很好，我们去公园吧！", "这是一张照片。",
    "猫和狗是好朋友。", "长城非常有名。", "我喜欢吃苹果和香蕉。", "他每天早上六点起床。",
    "这本书很有意思，你读过吗？", "图片里有什么？", "一张猫的照片", "一张狗的照片",
    "中国有很多美丽的地方。", "春天来了，花开了。", "请把门关上。", "我们明天见！",
    "人工智能正在改变世界。", "这个模型可以理解中文和英文。", "红色、绿色和蓝色。", "首都的夜景很漂亮。",
]
EN_ADJ = ["small", "big", "red", "black", "white", "cute", "happy", "old", "young", "beautiful", "fluffy", "brown"]
EN_OBJ = ["cat", "dog", "man", "woman", "car", "bird", "horse", "tree", "flower", "boat", "child", "house",
          "panda", "train", "bicycle", "pizza", "city", "mountain"]
EN_PLACES = ["grass", "beach", "street", "table", "snow", "sofa", "kitchen", "park", "river", "sky", "road", "bed"]
EN_VERBS = ["sitting", "sleeping", "running", "playing", "standing", "eating", "walking", "lying", "jumping"]
EN_TEMPLATES = [
    "a photo of a {adj} {obj}.",
    "a photo of a {obj} on the {place}",
    "a {adj} {obj} is {verb} on the {place}.",
    "The {obj} is {verb} near the {place}.",
    "There is a {adj} {obj} in this picture!",
    "Hello, world! This is a {obj}.",
    "A close-up photo of the {adj} {obj}, taken in {year}.",
    "Is the {obj} {verb}? Yes, it is.",
    "{adj} {obj}s and {adj2} {obj2}s",
    "an image of a {obj} and a {obj2} on the {place}",
]
MIXED_TEMPLATES = [
    "一张 photo of {cn} and a {obj} {emoji}",
    "{cn}{place} {emoji}",
    "这是一只 {adj} {obj}，它{place}{action}。",
    "I love {cn}! 我爱{obj}。",
    "{emoji}{emoji2} {obj} {emoji}",
    "照片: a {obj} {verb} on the {place}，非常可爱。",
]
EMOJI = ["🐱", "🐶", "🎉", "😀", "❤️", "👍", "🌸", "🚗", "😂", "🔥", "✨", "🍎"]
EXTRA = [
    "Café au lait, naïve résumé, Zürich and São Paulo. Ñandú, façade, jalapeño.",
    "Visit https://www.example.com/path/to/page?query=cat&lang=zh for more info.",
    "Email me at test@example.org or call +86 10 1234 5678.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2023 3.14159 1,000,000",
    "Ｆｕｌｌ－ｗｉｄｔｈ ｔｅｘｔ：ＡＢＣ１２３！",
    "Punctuation: ( ) [ ] { } < > \" ' ` ~ @ # $ % ^ & * - _ = + | \\ / ; : , . ? !",
    "中文标点：，。！？、；：“”‘’（）《》【】……——",
    "Tabs\tand\nnewlines are whitespace too.",
    "ALL CAPS TEXT AND MiXeD CaSe WoRdS",
]
EN_WORDS = (
    "the of and to in is was for on that with as by at from this be are have has had not but what all were "
    "when we there can an your which their said if do will each about how up out them then she many some so "
    "these would other into more her two like him see time could no make than first been its who now people "
    "my made over did down only way find use may water long little very after words called just where most "
    "know get through back much before go good new write our used me man too any day same right look think "
    "also around another came come work three word must because does part even place well such here take why "
    "things help put years different away again off went number great tell men say small every found still "
    "between name should home big give air line set own under read last never us left end along while might "
    "next sound below saw something thought both few those always looked show large often together asked house "
    "world going want school important until form food keep children feet land side without boy once animals "
    "life enough took sometimes four head above kind began almost live page got earth need far hand high year "
    "mother light parts country father let night following picture being study second eyes soon times story "
    "boys since white days ever paper hard near sentence better best across during today others however sure "
    "means knew try told young miles sun ways thing whole hear example heard several change answer room sea "
    "against top turned learn point city play toward five using himself usually money seen car morning river"
).split()
CN_WORDS = (
    "我们 你们 他们 今天 明天 昨天 时间 地方 朋友 学校 老师 学生 城市 国家 世界 生活 工作 电脑 手机 电影 "
    "音乐 图片 颜色 天气 早上 晚上 中午 东西 问题 事情 知道 觉得 喜欢 开始 已经 可以 应该 因为 所以 但是 "
    "如果 虽然 还是 或者 非常 特别 一起 一样 自己 大家 孩子 父母 妈妈 爸爸 哥哥 姐姐 弟弟 妹妹 先生 小姐 "
    "医院 银行 商店 饭店 机场 火车 汽车 自行车 飞机 公共 汽车站 地铁 道路 桥梁 山水 风景 海洋 沙漠 草原 "
    "动物 植物 水果 蔬菜 米饭 面条 饺子 茶 咖啡 牛奶 啤酒 衣服 鞋子 帽子 眼镜 桌子 椅子 窗户 门口 房子 "
    "美丽 漂亮 可爱 高兴 快乐 难过 生气 安静 热闹 干净 容易 困难 重要 简单 复杂 新的 旧的 长的 短的"
).split()


def build_corpus(seed: int = 20240601, n: int = 3000) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        kind = i % 6
        if kind in (0, 1):
            s = rng.choice(CN_SUBJECTS) + rng.choice(CN_PLACES) + rng.choice(CN_ACTIONS)
            s += rng.choice(["。", "！", "", "，真好。", "？"])
        elif kind == 2:
            s = rng.choice(CN_FACTS)
            if rng.random() < 0.3:
                s += rng.choice(CN_FACTS)
        elif kind == 3:
            s = rng.choice(EN_TEMPLATES).format(
                adj=rng.choice(EN_ADJ), adj2=rng.choice(EN_ADJ), obj=rng.choice(EN_OBJ),
                obj2=rng.choice(EN_OBJ), place=rng.choice(EN_PLACES), verb=rng.choice(EN_VERBS),
                year=rng.randint(1950, 2024))
        elif kind == 4:
            s = rng.choice(MIXED_TEMPLATES).format(
                cn=rng.choice(CN_SUBJECTS), obj=rng.choice(EN_OBJ), adj=rng.choice(EN_ADJ),
                place=rng.choice(CN_PLACES), action=rng.choice(CN_ACTIONS), verb=rng.choice(EN_VERBS),
                emoji=rng.choice(EMOJI), emoji2=rng.choice(EMOJI))
        else:
            r = rng.random()
            if r < 0.2:
                s = rng.choice(EXTRA)
            elif r < 0.6:
                s = " ".join(rng.choice(EN_WORDS + EN_OBJ) for _ in range(rng.randint(4, 14)))
                s = s[0].upper() + s[1:] + rng.choice([".", "!", "?", ",", ""])
            else:
                s = "".join(rng.choice(CN_WORDS) for _ in range(rng.randint(3, 8))) + rng.choice(["。", "！", "？", "，"])
        lines.append(s)
    return lines


SPM_VOCAB_SIZE = 1000


def train_spm() -> bytes:
    lines = build_corpus()
    spm.set_random_generator_seed(1234)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        model_type="unigram",
        vocab_size=SPM_VOCAB_SIZE,
        character_coverage=0.9995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        normalization_rule_name="nmt_nfkc",
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return buf.getvalue()


class SpmSlowTokenizer:
    """Exact emulation of the transformers v4 *slow* ``XLMRobertaTokenizer`` (sentencepiece-backed).

    transformers 5 no longer has a sentencepiece-backed XLMRobertaTokenizer (``XLMRobertaTokenizer`` is
    always the `tokenizers` backend; a ``sentencepiece.bpe.model`` is converted on load), so this is the
    "slow" reference: ``sp.encode(text, out_type=str)`` -> fairseq ids (spm id + 1, spm unk 0 -> 3),
    wrapped as ``<s> ... </s>``.
    """

    def __init__(self, model_file: str):
        self.sp = spm.SentencePieceProcessor(model_file=model_file)

    def __len__(self):
        return self.sp.get_piece_size() + 2  # + fairseq offset (1) + <mask>

    def encode(self, text: str) -> list[int]:
        pieces = self.sp.encode(text, out_type=str)
        ids = []
        for p in pieces:
            i = self.sp.piece_to_id(p)
            ids.append(i + 1 if i != 0 else 3)
        return [0] + ids + [2]


def build_fast_tokenizer_json(spm_path: Path, out_path: Path) -> None:
    """tokenizer.json via transformers' ``XLMRobertaConverter`` (the layout of the hub's tokenizer.json:
    ``<s>=0 <pad>=1 </s>=2 <unk>=3``, spm ids + 1, ``<mask>`` last), plus the special added tokens a v4
    ``XLMRobertaTokenizerFast.save_pretrained`` writes."""
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import XLMRobertaConverter

    n_pieces = spm.SentencePieceProcessor(model_file=str(spm_path)).get_piece_size()
    special = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": n_pieces + 1}

    class _Orig:  # the minimal surface XLMRobertaConverter needs from the slow tokenizer
        vocab_file = str(spm_path)
        add_prefix_space = True
        legacy = True

        @staticmethod
        def convert_tokens_to_ids(t):
            return special[t]

    tok = XLMRobertaConverter(_Orig()).converted()
    tok.add_special_tokens([
        AddedToken("<s>", special=True, normalized=False),
        AddedToken("<pad>", special=True, normalized=False),
        AddedToken("</s>", special=True, normalized=False),
        AddedToken("<unk>", special=True, normalized=False),
        AddedToken("<mask>", lstrip=True, special=True, normalized=False),
    ])
    assert tok.get_vocab_size() == n_pieces + 2
    for t, i in special.items():
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t), i)
    tok.save(str(out_path), pretty=False)


TOKENIZER_CONFIG = {
    "bos_token": "<s>",
    "cls_token": "<s>",
    "eos_token": "</s>",
    "mask_token": {
        "__type": "AddedToken",
        "content": "<mask>",
        "lstrip": True,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    },
    "model_max_length": 512,
    "pad_token": "<pad>",
    "sep_token": "</s>",
    "tokenizer_class": "XLMRobertaTokenizer",
    "unk_token": "<unk>",
}
SPECIAL_TOKENS_MAP = {
    "bos_token": "<s>",
    "cls_token": "<s>",
    "eos_token": "</s>",
    "mask_token": {"content": "<mask>", "lstrip": True, "normalized": True, "rstrip": False, "single_word": False},
    "pad_token": "<pad>",
    "sep_token": "</s>",
    "unk_token": "<unk>",
}

# Texts for the slow/fast parity file (tests/fixtures/spm/tokenize.json).
TOKENIZE_TEXTS = [
    "一只在草地上的猫",
    "a photo of a cat on the grass",
    "一张 photo of 猫 and a dog 🐶",
    "🐱🐶🎉",
    "",
    "   ",
    "Hello, world!",
    "北京是中国的首都。",
    "A photo of a CAT.",
    "the quick brown fox jumps over the lazy dog",
    "今天天气很好，我们去公园吧！",
    "人工智能正在改变世界。",
    "这是一只 cute panda，它在森林里睡觉。",
    "I love 一只小狗! 我爱dog。",
    "Café au lait, naïve résumé, Zürich and São Paulo.",
    "e\u0301 vs é (combining acute vs precomposed)",
    "Ångström, Øresund, Œuvre, Straße, İstanbul",
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ１２３！",
    "ﬁ ﬂ ½ ㎏ ① ™",
    "multiple    spaces   between   words",
    "  leading and trailing whitespace  ",
    "tabs\tand\nnewlines\r\ninside",
    "\t\n",
    "ideographic\u3000space and no-break\u00a0space",
    "zero\u200bwidth\u200bspace",
    "Numbers: 0 1 2 3 42 100 2023 3.14159 1,000,000",
    "Visit https://www.example.com/path/to/page?query=cat&lang=zh now",
    "test@example.org +86 10 1234 5678",
    "中文标点：，。！？、；：“”‘’（）《》【】……——",
    "Punctuation: ( ) [ ] { } < > \" ' ` ~ @ # $ % ^ & * - _ = + | \\ / ; : , . ?",
    "ALL CAPS TEXT AND MiXeD CaSe WoRdS",
    "❤️👍🌸🚗 emoji with text 😂🔥✨",
    "👨‍👩‍👧 family ZWJ sequence and 🇨🇳 flag",
    "rare characters: 齉龘靐 𠀀 ꙮ",
    "Привет, мир! Γειά σου κόσμε! こんにちは 안녕하세요 مرحبا",
    "▁ already has a meta symbol ▁▁",
    "x <s> y </s> <mask> <pad> <unk>",
    "next\u0085line (U+0085 NEL)",
    "line\u2028separator (U+2028)",
    "a",
    "a" * 50,
    "这是一段很长很长的中文文本，" * 8,
]

# Reference texts for the model outputs.
LONG_TEXT = (
    "这是一段很长的中英文混合测试文本，用来检查截断功能是否正确。The quick brown fox jumps over the lazy dog "
    "while 一只小猫在草地上睡觉，and a happy child is playing in the park near the river. 北京是中国的首都，"
    "上海是一个很大的城市。We love photos of cats, dogs, horses and pandas! 春天来了，花开了，我们一起去公园散步吧。"
    "Hello, world! 人工智能正在改变世界。"
)
REF_TEXTS = [
    "一只在草地上的猫",
    "a photo of a cat on the grass",
    "一张 photo of 猫 and a dog 🐶",
    "🐱🐶🎉",
    "",
    "   ",
    "Hello, world!",
    "北京是中国的首都。",
    LONG_TEXT,
]


# --------------------------------------------------------------------------------------------------
# 3. Synthetic images
# --------------------------------------------------------------------------------------------------


def _smooth_rgb(rng: np.random.Generator, w: int, h: int, noise: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    fx, fy = rng.uniform(20, 60, size=2)
    ph = rng.uniform(0, 2 * np.pi, size=3)
    r = 128 + 90 * np.sin(xx / fx + ph[0]) * np.cos(yy / fy + ph[1])
    g = 30 + 200 * xx / max(w - 1, 1)
    b = 220 - 180 * yy / max(h - 1, 1) + 20 * np.sin((xx + yy) / 17 + ph[2])
    img = np.stack([r, g, b], axis=-1)
    if noise > 0:
        img = img + rng.normal(0, noise, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _draw_shapes(im: Image.Image, rng: np.random.Generator, n: int) -> None:
    d = ImageDraw.Draw(im)
    w, h = im.size
    for k in range(n):
        x0, y0 = int(rng.integers(0, max(w - 4, 1))), int(rng.integers(0, max(h - 4, 1)))
        x1 = int(min(w - 1, x0 + rng.integers(4, max(5, w // 2))))
        y1 = int(min(h - 1, y0 + rng.integers(4, max(5, h // 2))))
        col = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if im.mode == "L":
            col = col[0]
        kind = k % 3
        if kind == 0:
            d.ellipse([x0, y0, x1, y1], fill=col)
        elif kind == 1:
            d.rectangle([x0, y0, x1, y1], fill=col)
        else:
            d.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=col)


def make_images(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12345)
    # photo.png: RGB 320x240, smooth gradients + shapes + mild noise
    base = Image.fromarray(_smooth_rgb(rng, 320, 240, 0.0), "RGB")
    _draw_shapes(base, rng, 6)
    arr = np.asarray(base).astype(np.float64) + rng.normal(0, 3.0, size=(240, 320, 3))
    photo = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "RGB")
    photo.save(out / "photo.png", optimize=False)

    # noise.png: RGB 257x193 uniform noise
    Image.fromarray(rng.integers(0, 256, size=(193, 257, 3), dtype=np.uint8), "RGB").save(out / "noise.png")

    # gray.png: mode L 200x150
    g = _smooth_rgb(rng, 200, 150, 2.0)[..., 1]
    gray = Image.fromarray(g, "L")
    _draw_shapes(gray, rng, 4)
    gray.save(out / "gray.png")

    # la.png: mode LA 64x48 (gray + alpha), alpha ramp with a fully transparent band
    l_chan = _smooth_rgb(rng, 64, 48, 4.0)[..., 0]
    a_chan = np.tile(np.linspace(0, 255, 64).round().astype(np.uint8), (48, 1))
    a_chan[10:20, :] = 0
    Image.fromarray(np.stack([l_chan, a_chan], axis=-1), "LA").save(out / "la.png")

    # rgba.png: RGBA 180x240 with varying alpha, fully transparent and fully opaque areas
    rgb = _smooth_rgb(rng, 180, 240, 4.0)
    yy, xx = np.mgrid[0:240, 0:180]
    alpha = np.clip(np.round(255 * (0.5 + 0.5 * np.sin(xx / 13.0) * np.cos(yy / 29.0))), 0, 255).astype(np.uint8)
    alpha[:40, :] = 0  # fully transparent band (random colours below it)
    rgb[:40, :] = rng.integers(0, 256, size=(40, 180, 3), dtype=np.uint8)
    alpha[200:, :] = 255  # fully opaque band
    alpha[100:140, 60:120] = 128
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(out / "rgba.png")

    # palette.png: mode P 150x150, 16-colour palette, index 3 transparent (tRNS)
    yy, xx = np.mgrid[0:150, 0:150]
    idx = ((xx // 19) + 2 * (yy // 23) + ((xx * yy) // 700)) % 16
    pal_img = Image.fromarray(idx.astype(np.uint8), "L").convert("P")
    palette = []
    for i in range(16):
        palette += [int(v) for v in rng.integers(0, 256, size=3)]
    pal_img.putpalette(palette)
    pal_img.save(out / "palette.png", transparency=3)

    # wide.png RGB 600x50, tall.png RGB 40x500 (no noise: keeps the upscaled resize refs small)
    wide = Image.fromarray(_smooth_rgb(rng, 600, 50, 0.0), "RGB")
    _draw_shapes(wide, rng, 8)
    wide.save(out / "wide.png")
    tall = Image.fromarray(_smooth_rgb(rng, 40, 500, 0.0), "RGB")
    _draw_shapes(tall, rng, 8)
    tall.save(out / "tall.png")

    # small.png RGB 20x15 (smaller than every crop)
    Image.fromarray(_smooth_rgb(rng, 20, 15, 10.0), "RGB").save(out / "small.png")

    # Encoded formats of the same photo
    photo.save(out / "photo.jpg", quality=90)
    photo.save(out / "photo.webp", lossless=True)
    photo.save(out / "photo.bmp")
    photo.save(out / "photo.tiff")  # uncompressed
    frame2 = Image.fromarray(255 - np.asarray(photo)[::-1, :, :].copy(), "RGB")
    _draw_shapes(frame2, rng, 3)
    photo.save(out / "anim.gif", save_all=True, append_images=[frame2], duration=[200, 200], loop=0)

    # rotated.jpg: 64x48 JPEG with EXIF Orientation=6 (display needs a 90° clockwise rotation)
    rot = np.zeros((48, 64, 3), np.uint8)
    rot[..., 0] = np.linspace(0, 255, 64).round().astype(np.uint8)[None, :]
    rot[..., 1] = np.linspace(255, 0, 48).round().astype(np.uint8)[:, None]
    rot[..., 2] = 60
    rot[2:14, 2:22] = (255, 255, 255)  # bright marker in the stored top-left corner
    rot_img = Image.fromarray(rot, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    rot_img.save(out / "rotated.jpg", quality=90, exif=exif)

    # Invalid inputs
    (out / "corrupt.png").write_bytes((out / "photo.png").read_bytes()[:100])
    (out / "notimage.png").write_text("this is not an image, just text pretending to be a PNG\n")


# Images covered by the reference outputs (all valid PNGs + the encoded formats).
REF_IMAGES = [
    "photo.png", "noise.png", "gray.png", "la.png", "rgba.png", "palette.png", "wide.png", "tall.png",
    "small.png", "photo.jpg", "photo.webp", "anim.gif", "photo.bmp", "photo.tiff", "rotated.jpg",
]


def open_for_reference(path: Path) -> Image.Image:
    """Image.open + ImageOps.exif_transpose (as transformers' load_image does), WITHOUT convert('RGB'):
    the processor's own do_convert_rgb handles the mode (alpha composited over white)."""
    img = Image.open(path)
    img = ImageOps.exif_transpose(img)
    return img


# --------------------------------------------------------------------------------------------------
# 5. Resize references
# --------------------------------------------------------------------------------------------------


def shortest_edge_size(w: int, h: int, s: int) -> tuple[int, int]:
    """Returns (width, height) exactly as transformers' get_resize_output_image_size(default_to_square=False)."""
    from transformers.image_transforms import get_resize_output_image_size
    from transformers.image_utils import ChannelDimension

    nh, nw = get_resize_output_image_size(np.zeros((3, h, w), np.uint8), size=s, default_to_square=False,
                                          input_data_format=ChannelDimension.FIRST)
    short, long = (w, h) if w <= h else (h, w)
    mine_long = (s * long) // short  # integer floor == int(s * long / short) for these magnitudes
    exp = (s, mine_long) if w <= h else (mine_long, s)
    assert (nw, nh) == exp, ((nw, nh), exp)
    return nw, nh


def make_resize_refs(images_dir: Path, out: Path) -> list[dict]:
    from transformers.image_processing_backends import PilBackend
    from transformers.image_utils import PILImageResampling, SizeDict

    out.mkdir(parents=True, exist_ok=True)
    backend = PilBackend()
    index = []
    for stem in ["photo", "noise", "gray", "wide", "tall", "small"]:
        src = Image.open(images_dir / f"{stem}.png").convert("RGB")
        for s in (224, 64):
            w, h = shortest_edge_size(src.width, src.height, s)
            res = src.resize((w, h), Image.BICUBIC, reducing_gap=None)
            # cross-check against the PIL backend's own resize on the CHW uint8 array
            chw = np.moveaxis(np.asarray(src), -1, 0)
            tr = backend.resize(chw, SizeDict(shortest_edge=s), resample=PILImageResampling.BICUBIC)
            assert tr.shape == (3, h, w) and np.array_equal(np.moveaxis(tr, 0, -1), np.asarray(res)), stem
            name = f"{stem}_{s}.png"
            res.save(out / name)
            index.append({"source": f"{stem}.png", "shortest_edge": s, "width": w, "height": h, "file": name})
    src = Image.open(images_dir / "noise.png").convert("RGB")
    # Both sides of Pillow 13's pass-order rule (vertical first when the height
    # shrinks by more than twice as many pixels as the width), plus degenerate sizes.
    for w, h in [(1000, 37), (13, 700), (257, 90), (200, 80), (200, 78), (300, 100), (129, 60), (1, 1), (5, 193)]:
        name = f"noise_{w}x{h}.png"
        src.resize((w, h), Image.BICUBIC, reducing_gap=None).save(out / name)
        index.append({"source": "noise.png", "width": w, "height": h, "file": name})
    write_pretty_json(out / "index.json", index)
    return index


# --------------------------------------------------------------------------------------------------
# 2. Models
# --------------------------------------------------------------------------------------------------


def preprocessor_config(shortest_edge: int, crop: int) -> dict:
    """Like BAAI/AltCLIP's current preprocessor_config.json (CLIPImageProcessor)."""
    return {
        "crop_size": {"height": crop, "width": crop},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": OPENAI_CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": OPENAI_CLIP_STD,
        "processor_class": "AltCLIPProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": shortest_edge},
    }


def randomize_(model: torch.nn.Module, seed: int, logit_scale: float, small_embeddings: bool = False) -> None:
    """Overwrite EVERY parameter with non-trivial random values so that nothing is 0/1 by accident:
    LayerNorm gains 1 + 0.1 N, all biases 0.1 N, embeddings / class_embedding 0.3 N, linear and conv
    weights N(0, 1/fan_in) (query/key weights x2 so attention is peaked), logit_scale fixed.

    small_embeddings (tiny-odd): the inputs of the first LayerNorms (text embeddings LayerNorm, vision
    pre_layrnorm) get a std of ~0.004 so that their variance (~5e-5) is comparable to layer_norm_eps:
    then eps=1e-6 vs the default 1e-5 changes the outputs by a lot (checked in make_reference)."""
    gen = torch.Generator().manual_seed(seed)
    ln_names = {name for name, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    emb_names = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    emb_std = 0.004 if small_embeddings else 0.3
    with torch.no_grad():
        for name, p in model.named_parameters():
            owner, _, leaf = name.rpartition(".")
            if name == "logit_scale":
                p.fill_(logit_scale)
                continue
            r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if owner in ln_names and leaf == "weight":
                p.copy_(1.0 + 0.1 * r)
            elif leaf == "bias":
                p.copy_(0.1 * r)
            elif owner in emb_names or leaf == "class_embedding":
                p.copy_(emb_std * r)
            elif p.ndim >= 2:
                fan_in = int(np.prod(p.shape[1:]))
                std = 1.0 / math.sqrt(fan_in)
                if owner.endswith(("self.query", "self.key", "self_attn.q_proj", "self_attn.k_proj")):
                    std *= 2.0
                if small_embeddings and owner.endswith("embeddings.patch_embedding"):
                    std *= emb_std
                p.copy_(std * r)
            else:
                raise AssertionError(f"unhandled parameter {name} {tuple(p.shape)}")


def hub_state_dict(model, tmp: Path) -> dict[str, torch.Tensor]:
    """State dict with the hub (transformers v4) key names.

    transformers 5.24 keeps ``text_model.roberta.encoder.layers.N`` in memory (its altclip conversion
    mapping renames ``layer.`` -> ``layers.`` on load).  ``save_pretrained`` reverses that mapping on
    save, which gives the hub name ``text_model.roberta.encoder.layer.N`` for the text tower, but it
    ALSO rewrites the vision tower to ``vision_model.encoder.layer.N`` (hub: ``layers.N``).  This is
    checked below; the files written here therefore use our own renaming, not save_pretrained's."""
    mem = model.state_dict()
    sd = {}
    for k, v in mem.items():
        if k.endswith(".position_ids") or k.endswith(".token_type_ids"):
            continue
        hk = k.replace("text_model.roberta.encoder.layers.", "text_model.roberta.encoder.layer.")
        sd[hk] = v.detach().clone().contiguous()
    assert any(k.startswith("text_model.roberta.encoder.layer.0.") for k in sd)
    assert any(k.startswith("vision_model.encoder.layers.0.") for k in sd)

    model.save_pretrained(tmp)
    saved = load_file(str(tmp / "model.safetensors"))
    expect_v5 = {k.replace("vision_model.encoder.layers.", "vision_model.encoder.layer."): v for k, v in sd.items()}
    if set(saved) == set(expect_v5):
        SAVE_FINDINGS["save_pretrained"] = "text: encoder.layer.N (hub), vision: encoder.layer.N (NOT hub layers.N)"
    elif set(saved) == set(sd):
        SAVE_FINDINGS["save_pretrained"] = "hub layout (text layer.N, vision layers.N)"
    else:
        SAVE_FINDINGS["save_pretrained"] = "unexpected: " + ", ".join(sorted(saved)[:5])
    for k, v in saved.items():
        hk = k.replace("vision_model.encoder.layer.", "vision_model.encoder.layers.")
        assert torch.equal(sd[hk], v), k
    return {k: sd[k] for k in sorted(sd)}


SAVE_FINDINGS: dict[str, str] = {}


def stray_buffers(cfg) -> dict[str, torch.Tensor]:
    n_vis = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2 + 1
    return {
        "text_model.roberta.embeddings.position_ids": torch.arange(cfg.text_config.max_position_embeddings,
                                                                   dtype=torch.int64)[None],
        "vision_model.embeddings.position_ids": torch.arange(n_vis, dtype=torch.int64)[None],
    }


def save_st(sd: dict, path: Path) -> None:
    save_file(sd, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o644)


def write_bin(sd: dict, path: Path) -> None:
    torch.save(sd, path)  # zip format (default)


def make_config(text: dict, vision: dict, projection_dim: int):
    from transformers import AltCLIPConfig

    return AltCLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def check_loading(model_dir: Path, **kw):
    from transformers import AltCLIPModel

    model, info = AltCLIPModel.from_pretrained(model_dir, output_loading_info=True, attn_implementation="eager", **kw)
    bad = {k: v for k, v in info.items() if v and k != "error_msgs"}
    bad = {k: [x for x in v if "position_ids" not in x] for k, v in bad.items()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad and not info.get("error_msgs"), (model_dir, info)
    model.eval()
    return model


def build_model_dirs(spm_dir: Path, vocab_size: int) -> dict[str, Path]:
    from transformers import AltCLIPModel

    dirs = {}
    specs = {
        "tiny-224": dict(
            seed=224, logit_scale=2.0,
            text=dict(vocab_size=vocab_size, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                      intermediate_size=128, project_dim=48, max_position_embeddings=514),
            vision=dict(image_size=224, patch_size=32, hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                        intermediate_size=64, hidden_act="quick_gelu"),
            projection_dim=32),
        "tiny-odd": dict(
            seed=60, logit_scale=2.3,
            text=dict(vocab_size=vocab_size, hidden_size=40, num_attention_heads=5, num_hidden_layers=3,
                      intermediate_size=56, project_dim=20, layer_norm_eps=1e-6, max_position_embeddings=514),
            vision=dict(image_size=60, patch_size=6, hidden_size=30, num_attention_heads=3, num_hidden_layers=3,
                        intermediate_size=50, layer_norm_eps=1e-6, hidden_act="quick_gelu"),
            projection_dim=12),
        "tiny-m18": dict(
            seed=18, logit_scale=1.7,
            text=dict(vocab_size=vocab_size, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                      intermediate_size=128, project_dim=40),
            vision=dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64),
            projection_dim=40),
    }
    for name, spec in specs.items():
        d = FIX / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        torch.manual_seed(spec["seed"])
        cfg = make_config(spec["text"], spec["vision"], spec["projection_dim"])
        model = AltCLIPModel(cfg).eval()
        randomize_(model, spec["seed"], spec["logit_scale"], small_embeddings=(name == "tiny-odd"))
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            sd = hub_state_dict(model, tmp)
            cfg_json = json.loads((tmp / "config.json").read_text())

        if name == "tiny-224":
            write_pretty_json(d / "config.json", cfg_json)
            save_st(sd, d / "model.safetensors")
            shutil.copy(spm_dir / "tokenizer.json", d / "tokenizer.json")
            shutil.copy(spm_dir / "sentencepiece.bpe.model", d / "sentencepiece.bpe.model")
            write_pretty_json(d / "tokenizer_config.json", TOKENIZER_CONFIG)
            write_pretty_json(d / "special_tokens_map.json", SPECIAL_TOKENS_MAP)
            write_pretty_json(d / "preprocessor_config.json", preprocessor_config(224, 224))
        elif name == "tiny-odd":
            write_pretty_json(d / "config.json", cfg_json)
            shard1 = {k: v for k, v in sd.items() if k.startswith("text_model.")}
            shard2 = {k: v for k, v in sd.items() if not k.startswith("text_model.")}
            names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
            weight_map = {}
            for fname, shard in zip(names, [shard1, shard2]):
                save_st(shard, d / fname)
                weight_map.update({k: fname for k in shard})
            total = sum(v.numel() * v.element_size() for v in sd.values())
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
            write_bin({**sd, **stray_buffers(cfg)}, d / "pytorch_model.bin")
            shutil.copy(spm_dir / "sentencepiece.bpe.model", d / "sentencepiece.bpe.model")
            write_pretty_json(d / "tokenizer_config.json", TOKENIZER_CONFIG)
            write_pretty_json(d / "special_tokens_map.json", SPECIAL_TOKENS_MAP)
            write_pretty_json(d / "preprocessor_config.json", preprocessor_config(64, 60))
        else:  # tiny-m18: minimal config, defaults must be filled from transformers' classes
            text_keys = ["vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers",
                         "intermediate_size", "project_dim"]
            vision_keys = ["hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size"]
            minimal = {
                "architectures": ["AltCLIPModel"],
                "model_type": "altclip",
                "projection_dim": spec["projection_dim"],
                "text_config": {k: cfg_json["text_config"][k] for k in text_keys},
                "vision_config": {k: cfg_json["vision_config"][k] for k in vision_keys},
            }
            # the keys left out must be transformers' class defaults
            from transformers import AltCLIPTextConfig, AltCLIPVisionConfig
            dt, dv = AltCLIPTextConfig().to_dict(), AltCLIPVisionConfig().to_dict()
            for k, v in cfg_json["text_config"].items():
                if k not in text_keys and k in dt:
                    assert dt[k] == v, (k, v, dt[k])
            for k, v in cfg_json["vision_config"].items():
                if k not in vision_keys and k in dv:
                    assert dv[k] == v, (k, v, dv[k])
            assert cfg_json["logit_scale_init_value"] == 2.6592
            write_pretty_json(d / "config.json", minimal)
            save_st(sd, d / "model.safetensors")
            shutil.copy(spm_dir / "tokenizer.json", d / "tokenizer.json")
            write_pretty_json(d / "preprocessor_config.json", preprocessor_config(224, 224))

        # Loading checks (no missing/unexpected keys; weights identical to what we generated)
        loaded = check_loading(d)
        mem = model.state_dict()
        for k, v in loaded.state_dict().items():
            assert torch.equal(mem[k], v), (name, k)
        assert loaded.config.to_dict()["text_config"]["layer_norm_eps"] == cfg.text_config.layer_norm_eps
        if name == "tiny-odd":
            loaded_bin = check_loading(d, use_safetensors=False)
            for k, v in loaded_bin.state_dict().items():
                assert torch.equal(mem[k], v), (name, "bin", k)
            raw = torch.load(d / "pytorch_model.bin", weights_only=True, map_location="cpu")
            assert set(raw) == set(sd) | set(stray_buffers(cfg))
        dirs[name] = d
    return dirs


# --------------------------------------------------------------------------------------------------
# 4. Reference outputs
# --------------------------------------------------------------------------------------------------


def load_processor(model_dir: Path, tokenizer):
    from transformers import AltCLIPProcessor, AutoImageProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = AutoImageProcessor.from_pretrained(model_dir, backend="pil")
    assert isinstance(image_processor, CLIPImageProcessorPil), type(image_processor)
    assert image_processor.backend == "pil"
    assert "Torchvision" not in type(image_processor).__mro__.__repr__()
    if (model_dir / "tokenizer_config.json").exists():
        proc = AltCLIPProcessor.from_pretrained(model_dir, backend="pil")
        assert isinstance(proc.image_processor, CLIPImageProcessorPil), type(proc.image_processor)
        assert proc.image_processor.backend == "pil"
        assert type(proc.tokenizer).__name__ == "XLMRobertaTokenizer"
        if tokenizer is not None:
            proc.tokenizer = tokenizer
        return proc
    return AltCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def manual_pixel_values(img: Image.Image, shortest_edge: int, crop: int) -> np.ndarray:
    """Independent re-implementation of the PIL-backend pipeline, asserted bit-identical below."""
    has_alpha = "A" in img.getbands() or img.info.get("transparency") is not None
    if has_alpha:
        rgba = img.convert("RGBA")
        rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    else:
        rgb = img.convert("RGB")
    w, h = shortest_edge_size(rgb.width, rgb.height, shortest_edge)
    rgb = rgb.resize((w, h), Image.BICUBIC, reducing_gap=None)
    a = np.asarray(rgb)
    top, left = (h - crop) // 2, (w - crop) // 2
    assert top >= 0 and left >= 0
    a = a[top:top + crop, left:left + crop]
    x = (a.astype(np.float64) * 0.00392156862745098).astype(np.float32)
    x = (x - np.array(OPENAI_CLIP_MEAN, np.float32)) / np.array(OPENAI_CLIP_STD, np.float32)
    return np.moveaxis(x, -1, 0)


def make_reference(name: str, model_dir: Path, images_dir: Path, slow: SpmSlowTokenizer, versions: dict) -> dict:
    from transformers import XLMRobertaTokenizer

    model = check_loading(model_dir)
    # tokenizer exactly as a user would get it from this directory
    tokenizer = XLMRobertaTokenizer.from_pretrained(model_dir)
    if name == "tiny-odd":
        assert not (model_dir / "tokenizer.json").exists()  # built from sentencepiece.bpe.model
    proc = load_processor(model_dir, tokenizer)
    pp = json.loads((model_dir / "preprocessor_config.json").read_text())
    se, crop = pp["size"]["shortest_edge"], pp["crop_size"]["height"]

    enc = tokenizer(REF_TEXTS, truncation=True, max_length=77)["input_ids"]
    enc_full = tokenizer(REF_TEXTS)["input_ids"]
    for t, ids, full in zip(REF_TEXTS, enc, enc_full):
        assert full == slow.encode(t), (t, full, slow.encode(t))
        assert ids == (full if len(full) <= 77 else full[:76] + [2]), t
    assert len(enc_full[-1]) > 120 and len(enc[-1]) == 77, len(enc_full[-1])

    with torch.no_grad():
        inputs = proc(text=REF_TEXTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        out = model.get_text_features(**inputs)
        text_features = out.pooler_output
        # == text_projection(pooler_output of the text tower) (hub/v4 definition)
        tm = model.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        alt = model.text_projection(tm.pooler_output)
        assert torch.allclose(alt, text_features, atol=1e-6, rtol=0)
        # per-text, unpadded (padding must not matter beyond fp noise)
        for i, ids in enumerate(enc):
            single = model.get_text_features(input_ids=torch.tensor([ids])).pooler_output[0]
            assert torch.allclose(single, text_features[i], atol=2e-5, rtol=1e-5), (i, (single - text_features[i]).abs().max())
        inputs512 = proc(text=[LONG_TEXT], padding=True, truncation=True, max_length=512, return_tensors="pt")
        assert inputs512["input_ids"].shape[1] == len(enc_full[-1])
        text_features_512 = model.get_text_features(**inputs512).pooler_output

        image_features, pixel_values = [], []
        for fname in REF_IMAGES:
            img = open_for_reference(images_dir / fname)
            pv = proc(images=img, return_tensors="pt")["pixel_values"]
            assert pv.shape == (1, 3, crop, crop) and pv.dtype == torch.float32
            manual = manual_pixel_values(open_for_reference(images_dir / fname), se, crop)
            assert np.array_equal(manual, pv[0].numpy()), (name, fname, np.abs(manual - pv[0].numpy()).max())
            image_features.append(model.get_image_features(pixel_values=pv).pooler_output[0].numpy())
            pixel_values.append(pv[0].numpy().reshape(-1))

        sim_images = [open_for_reference(images_dir / f) for f in ("photo.png", "gray.png")]
        sim_inputs = proc(text=REF_TEXTS[0:3], images=sim_images, padding=True, truncation=True, max_length=77,
                          return_tensors="pt")
        outputs = model(**sim_inputs)
        similarity = outputs.logits_per_image.softmax(-1)
        # cross-check the joint head against the stand-alone feature functions
        ie = torch.tensor(np.stack([image_features[REF_IMAGES.index("photo.png")],
                                    image_features[REF_IMAGES.index("gray.png")]]))
        te = text_features[0:3]
        ie, te = ie / ie.norm(dim=-1, keepdim=True), te / te.norm(dim=-1, keepdim=True)
        sim2 = (ie @ te.T * model.logit_scale.exp()).softmax(-1)
        assert torch.allclose(sim2, similarity, atol=1e-5), (sim2, similarity)
        # the fixtures must not be degenerate
        assert float(similarity.max()) < 0.999 and float(similarity.min()) > 1e-4, similarity
        feats = np.stack(image_features)
        assert np.std(feats) > 0.05 and np.abs(np.corrcoef(feats)[np.triu_indices(len(feats), 1)]).min() < 0.999

        eps_check = None
        if name == "tiny-odd":
            # prove that layer_norm_eps=1e-6 (config) vs the 1e-5 default is visible in the outputs
            import copy

            m2 = copy.deepcopy(model)
            for mod in m2.text_model.modules():
                if isinstance(mod, torch.nn.LayerNorm):
                    assert mod.eps == 1e-6
                    mod.eps = 1e-5
            for mod in m2.vision_model.modules():
                if isinstance(mod, torch.nn.LayerNorm):
                    assert mod.eps == 1e-6
                    mod.eps = 1e-5
            t2 = m2.get_text_features(**inputs).pooler_output
            pv0 = proc(images=open_for_reference(images_dir / "photo.png"), return_tensors="pt")["pixel_values"]
            i2 = m2.get_image_features(pixel_values=pv0).pooler_output[0]
            eps_check = {
                "text_features_max_abs_diff_if_eps_1e-5": float((t2 - text_features).abs().max()),
                "photo_image_features_max_abs_diff_if_eps_1e-5":
                    float((i2 - torch.tensor(image_features[0])).abs().max()),
            }
            assert min(eps_check.values()) > 1e-2, eps_check

    ref = {
        "versions": versions,
        "script": SCRIPT_REL,
        "model": name,
        "texts": REF_TEXTS,
        "input_ids": enc,
        "input_ids_untruncated": enc_full,
        "text_features": text_features.numpy(),
        "text_features_maxlen512": text_features_512.numpy(),
        "images": REF_IMAGES,
        "image_features": np.stack(image_features),
    }
    if name == "tiny-odd":
        ref["pixel_values"] = np.stack(pixel_values)
    ref["similarity_images"] = ["photo.png", "gray.png"]
    ref["similarity_texts"] = REF_TEXTS[0:3]
    ref["similarity"] = similarity.numpy()
    ref["logit_scale"] = float(model.logit_scale.item())
    ref["attn_implementation"] = "eager"
    if eps_check is not None:
        ref["eps_sensitivity"] = eps_check
    return ref


# --------------------------------------------------------------------------------------------------
# 6. Tokenizer parity + converted RGB images
# --------------------------------------------------------------------------------------------------


def make_tokenize_json(spm_dir: Path, slow: SpmSlowTokenizer) -> list[dict]:
    from tokenizers import Tokenizer
    from transformers import XLMRobertaTokenizer

    fast = Tokenizer.from_file(str(spm_dir / "tokenizer.json"))
    hf_json = XLMRobertaTokenizer.from_pretrained(spm_dir)  # loads tokenizer.json (v5 rebuilds its pipeline)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(spm_dir / "sentencepiece.bpe.model", Path(tmp) / "sentencepiece.bpe.model")
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
        hf_spm = XLMRobertaTokenizer.from_pretrained(tmp)  # converts sentencepiece.bpe.model on load
    assert len(hf_json) == len(hf_spm) == len(slow) == fast.get_vocab_size()
    texts, ids, dropped = [], [], []
    for t in TOKENIZE_TEXTS:
        a = slow.encode(t)
        b = fast.encode(t, add_special_tokens=True).ids
        c = hf_json(t, add_special_tokens=True)["input_ids"]
        d = hf_spm(t, add_special_tokens=True)["input_ids"]
        if a == b == c == d:
            texts.append(t)
            ids.append(a)
        else:
            dropped.append({"text": t, "sentencepiece_slow": a, "tokenizer_json": b,
                            "transformers_from_tokenizer_json": c, "transformers_from_spm": d})
    write_json(spm_dir / "tokenize.json", {"texts": texts, "ids": ids, "dropped": dropped}, indent_levels=1)
    return dropped


def check_alpha_composite_formula() -> None:
    """Exhaustive check of the closed form of Pillow's alpha_composite over opaque white (per channel):
    out = 255 - (a * (255 - c) + 127) // 255   ( == round(c*a/255 + 255*(1 - a/255)), no ties possible)."""
    c, a = np.meshgrid(np.arange(256), np.arange(256))
    src = np.stack([c, c, c, a], -1).astype(np.uint8)
    white = Image.new("RGBA", (256, 256), (255, 255, 255, 255))
    out = np.asarray(Image.alpha_composite(white, Image.fromarray(src, "RGBA")).convert("RGB"))[..., 0]
    closed = 255 - (a * (255 - c) + 127) // 255
    assert np.array_equal(out.astype(np.int64), closed)


def make_rgb_refs(images_dir: Path, out: Path) -> list[dict]:
    from transformers.image_transforms import convert_to_rgb

    out.mkdir(parents=True, exist_ok=True)
    index = []
    for fname in ["gray.png", "la.png", "rgba.png", "palette.png", "anim.gif", "rotated.jpg"]:
        img = open_for_reference(images_dir / fname)
        rgb = convert_to_rgb(img, return_numpy=True)
        has_alpha = "A" in img.getbands() or img.info.get("transparency") is not None
        if has_alpha:
            rgba = img.convert("RGBA")
            exp = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        else:
            exp = img.convert("RGB")
        assert np.array_equal(np.asarray(exp), rgb), fname
        stem = fname.replace(".", "_")
        Image.fromarray(rgb, "RGB").save(out / f"{stem}.png")
        index.append({"source": fname, "mode": img.mode, "composited_over_white": bool(has_alpha),
                      "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "file": f"{stem}.png"})
    write_pretty_json(out / "index.json", index)
    return index


# --------------------------------------------------------------------------------------------------


def deterministic_setup() -> None:
    """Single-threaded, seeded and quiet: two runs write identical bytes."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.parse_args()
    deterministic_setup()

    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "sentencepiece": spm.__version__,
    }
    print("versions:", versions)
    FIX.mkdir(parents=True, exist_ok=True)

    # 1. tokenizer
    spm_dir = FIX / "spm"
    if spm_dir.exists():
        shutil.rmtree(spm_dir)
    spm_dir.mkdir(parents=True)
    (spm_dir / "sentencepiece.bpe.model").write_bytes(train_spm())
    build_fast_tokenizer_json(spm_dir / "sentencepiece.bpe.model", spm_dir / "tokenizer.json")
    write_pretty_json(spm_dir / "tokenizer_config.json", TOKENIZER_CONFIG)
    write_pretty_json(spm_dir / "special_tokens_map.json", SPECIAL_TOKENS_MAP)
    slow = SpmSlowTokenizer(str(spm_dir / "sentencepiece.bpe.model"))
    vocab_size = len(slow)
    print("tokenizer vocab size:", vocab_size)
    dropped = make_tokenize_json(spm_dir, slow)
    for dtext in dropped:
        print("tokenize.json: dropped (slow/fast differ):", repr(dtext["text"]))

    # 3. images (+ RGB conversion refs), 5. resize refs
    images_dir = FIX / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    make_images(images_dir)
    for sub in ("rgb", "resize"):
        if (FIX / sub).exists():
            shutil.rmtree(FIX / sub)
    check_alpha_composite_formula()
    make_rgb_refs(images_dir, FIX / "rgb")
    make_resize_refs(images_dir, FIX / "resize")

    # 2. models, 4. references
    dirs = build_model_dirs(spm_dir, vocab_size)
    for name, d in dirs.items():
        ref = make_reference(name, d, images_dir, slow, versions)
        write_json(d / "reference.json", ref)
        print(f"{name}: reference.json written")

    print("save_pretrained key layout:", SAVE_FINDINGS.get("save_pretrained"))
    total = sum(p.stat().st_size for p in FIX.rglob("*") if p.is_file())
    print(f"total fixture size: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
