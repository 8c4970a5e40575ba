"""CLIP_benchmark's own zero-shot classification and retrieval `evaluate` functions, fed with
embeddings from the `altclip` Python package, on a dataset laid out as tests/fixtures/eval/data
(an image folder with labels.csv, classnames.json, templates.json; retrieval images with a
`image,caption` CSV). (numpy 2.4 refuses the float() of a one-element array in CLIP_benchmark
1.6.2's accuracy(), hence the pin.) Prints CLIP_benchmark's metrics and, with --reference, the reference
metrics of transformers' features from tests/fixtures/eval/reference.json beside them.

    pip install ./crates/altclip-python clip_benchmark==1.6.2 scikit-learn tqdm torch "numpy<2.4"
    python scripts/clip_benchmark_python.py --model tests/fixtures/tiny-224 \
        --data tests/fixtures/eval/data --reference tests/fixtures/eval/reference.json

CLIP_benchmark's functions take an open_clip-style model (`encode_image`, `encode_text`), a
tokenizer and a torch DataLoader; the adapters below pass file paths and strings through them
untouched and let the package do the decoding, tokenising and embedding.
"""
import argparse
import csv
import json
from pathlib import Path

import torch
from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

import altclip


class Batch(list):
    """A batch of paths or strings that CLIP_benchmark moves `.to(device)`: it stays as it is."""

    def to(self, _device):
        return self


class PackageModel:
    """`encode_image` / `encode_text` over an `altclip.AltCLIP`, returning torch tensors."""

    def __init__(self, model: altclip.AltCLIP) -> None:
        self.model = model

    def encode_image(self, paths):
        return torch.from_numpy(self.model.embed_images(list(paths)))

    def encode_text(self, texts):
        return torch.from_numpy(self.model.embed_texts(list(texts)))


def tokenizer(texts):
    return Batch(texts)


class Listed(torch.utils.data.Dataset):
    def __init__(self, rows, classes=None):
        self.rows, self.classes = rows, classes

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def collate(rows):
    images, targets = zip(*rows)
    if isinstance(targets[0], int):
        return Batch(images), torch.tensor(targets)
    return Batch(images), list(targets)


def classification(model, data: Path, language: str, batch_size: int) -> dict:
    classnames = json.loads((data / "classnames.json").read_text(encoding="utf-8"))[language]
    templates = json.loads((data / "templates.json").read_text(encoding="utf-8"))
    with open(data / "labels.csv", encoding="utf-8") as f:
        rows = [(str(data / r["path"]), int(r["label"])) for r in csv.DictReader(f)]
    loader = torch.utils.data.DataLoader(Listed(rows, classnames), batch_size=batch_size, collate_fn=collate)
    return zeroshot_classification.evaluate(PackageModel(model), loader, tokenizer, classnames, templates,
                                            "cpu", amp=False)


def retrieval(model, data: Path, language: str, batch_size: int, ks) -> dict:
    captions = {}
    # `image,caption` lines, unquoted: the caption is everything after the first comma.
    lines = (data / "retrieval" / f"clip_benchmark_{language}.txt").read_text(encoding="utf-8").splitlines()
    for line in lines[1:]:
        image, caption = line.split(",", 1)
        captions.setdefault(image, []).append(caption)
    rows = [(str(data / "retrieval" / "images" / image), texts) for image, texts in captions.items()]
    loader = torch.utils.data.DataLoader(Listed(rows), batch_size=batch_size, collate_fn=collate)
    return zeroshot_retrieval.evaluate(PackageModel(model), loader, tokenizer, "cpu", amp=False, recall_k_list=ks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory or Hub id")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--language", action="append", help="en, zh (default both)")
    p.add_argument("--dtype", default="f32")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--reference", type=Path, help="reference.json with transformers' metrics")
    args = p.parse_args()
    model = altclip.AltCLIP(args.model, args.dtype)
    reference = json.loads(args.reference.read_text()) if args.reference else None
    for language in args.language or ["en", "zh"]:
        results = {
            "zeroshot": classification(model, args.data, language, args.batch_size),
            "retrieval": retrieval(model, args.data, language, args.batch_size, [1, 5]),  # topk refuses k > n
        }
        for task, metrics in results.items():
            for name, value in metrics.items():
                line = f"{language} {task} {name}: {value:.6f}"
                if reference is not None:
                    want = reference[task][language]["metrics"].get(name)
                    line += f"   transformers: {want}" if want is not None else "   transformers: -"
                print(line)


if __name__ == "__main__":
    main()
