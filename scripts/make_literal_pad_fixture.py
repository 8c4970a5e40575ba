"""Reference for a text that contains the literal special token `<pad>`.

transformers' tokenizer gives the literal `<pad>` the pad id but an attention
mask of 1; its position ids still skip it (`create_position_ids_from_input_ids`).
Writes tests/fixtures/tiny-224/literal_pad.json. Run after make_fixtures.py:

    python scripts/make_literal_pad_fixture.py
"""
import json
from pathlib import Path

import torch
from transformers import AltCLIPModel, AutoTokenizer

TEXTS = ["a <pad> cat on a mat", "<pad><pad> two pads first", "no pad here"]


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    model_dir = root / "tests" / "fixtures" / "tiny-224"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AltCLIPModel.from_pretrained(model_dir).eval()
    inputs = tokenizer(TEXTS, padding=True, return_tensors="pt")
    pad = tokenizer.pad_token_id
    ids = [[int(t) for t, m in zip(row, mask) if m] for row, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
    assert any(pad in row for row in ids), "the literal <pad> must tokenize to the pad id"
    with torch.no_grad():
        features = model.get_text_features(**inputs).pooler_output
    out = {"texts": TEXTS, "input_ids": ids, "text_features": features.tolist()}
    (model_dir / "literal_pad.json").write_text(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
