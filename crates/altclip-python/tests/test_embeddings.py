"""`altclip.Embeddings`, the LangChain-style pair."""
import asyncio

import numpy as np

import altclip
from conftest import IMAGES


def test_embed_documents_and_query_are_the_models_vectors(tiny):
    emb = altclip.Embeddings(tiny, batch_size=2)
    docs = ["一只猫", "a photo of a dog", "海边的日落"]
    vectors = emb.embed_documents(docs)
    assert isinstance(vectors, list) and isinstance(vectors[0], list) and isinstance(vectors[0][0], float)
    np.testing.assert_allclose(np.array(vectors), tiny.embed_texts(docs), atol=0)
    np.testing.assert_allclose(emb.embed_query("一只猫"), tiny.embed_texts(["一只猫"])[0], atol=0)
    np.testing.assert_allclose(emb.embed_image([IMAGES / "photo.png"]), tiny.embed_images([IMAGES / "photo.png"]))
    assert asyncio.run(emb.aembed_query("一只猫")) == emb.embed_query("一只猫")
    assert asyncio.run(emb.aembed_documents(docs)) == vectors
