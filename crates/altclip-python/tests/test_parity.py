"""The Python API gives transformers' outputs on the golden fixtures, to the Rust tests' bounds."""
import numpy as np
import pytest

import altclip
from conftest import FIXTURES, IMAGES, MODELS, assert_close, reference


@pytest.mark.parametrize("name", MODELS)
def test_text_features_and_tokens_match_transformers(name):
    ref = reference(name)
    model = altclip.AltCLIP(FIXTURES / name)
    assert model.tokenize(ref["texts"]) == ref["input_ids"]
    raw = model.embed_texts(ref["texts"], normalize=False, batch_size=4)
    assert raw.shape == (len(ref["texts"]), model.embedding_dim)
    for text, ours, theirs in zip(ref["texts"], raw, ref["text_features"]):
        assert_close(f"{name} text {text!r}", ours, theirs)
    unit = model.embed_texts(ref["texts"])
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    assert abs(model.logit_scale - ref["logit_scale"]) < 1e-6


@pytest.mark.parametrize("name", MODELS)
def test_image_features_match_transformers(name):
    ref = reference(name)
    model = altclip.AltCLIP(FIXTURES / name)
    paths = [IMAGES / n for n in ref["images"]]
    raw = model.embed_images(paths, normalize=False, batch_size=4)
    for image, ours, theirs in zip(ref["images"], raw, ref["image_features"]):
        assert_close(f"{name} image {image}", ours, theirs)


def test_long_texts_follow_max_length():
    ref = reference("tiny-224")
    model = altclip.AltCLIP(FIXTURES / "tiny-224", max_length=512)
    long = ref["texts"][-1]
    assert model.tokenize([long])[0] == ref["input_ids_untruncated"][-1]
    assert_close("512-token text", model.embed_texts(long, normalize=False)[0], ref["text_features_maxlen512"][0])


def test_similarity_is_transformers_softmax(tiny):
    ref = reference("tiny-224")
    probs = tiny.similarity([IMAGES / n for n in ref["similarity_images"]], ref["similarity_texts"])
    np.testing.assert_allclose(probs, ref["similarity"], atol=1e-5)
    # Precomputed embeddings give the same.
    img = tiny.embed_images([IMAGES / n for n in ref["similarity_images"]])
    np.testing.assert_allclose(tiny.similarity(img, tiny.embed_texts(ref["similarity_texts"])), probs, atol=1e-6)


def test_classify_ranks_by_the_class_embeddings(tiny):
    labels = ["猫", "狗", "a car", "一棵树"]
    top = tiny.classify([IMAGES / "photo.png", IMAGES / "gray.png"], labels, templates="auto", top_k=3)
    assert [len(t) for t in top] == [3, 3]
    for row in top:
        probs = [p for _, p in row]
        assert probs == sorted(probs, reverse=True)
    # With the bare label as the only template, the probabilities are similarity()'s.
    bare = tiny.classify([IMAGES / "photo.png"], labels, templates="none", top_k=4)[0]
    expected = tiny.similarity([IMAGES / "photo.png"], labels)[0]
    for label, p in bare:
        assert abs(p - expected[labels.index(label)]) < 1e-5, (label, p)
    with pytest.raises(ValueError, match="placeholder"):
        tiny.classify([IMAGES / "photo.png"], labels, templates=["a photo"])
