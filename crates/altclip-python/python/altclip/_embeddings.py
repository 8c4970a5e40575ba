"""`Embeddings`: the `embed_documents` / `embed_query` pair that LangChain-style vector stores call."""
from __future__ import annotations

import os
from typing import Any, List, Sequence, Union

from ._model import AltCLIP


class Embeddings:
    """Texts (and images) to lists of floats, with the method names LangChain's vector stores
    (FAISS, Chroma, Milvus, ...) call; plain Python, no LangChain needed. Pass an instance where
    an ``Embeddings`` object is expected.

    ``Embeddings("BAAI/AltCLIP")`` loads a model; ``Embeddings(model)`` reuses an `AltCLIP`.
    Vectors are L2-normalised, so inner product and cosine rank alike.
    """

    def __init__(self, model: Union[str, os.PathLike, AltCLIP] = "BAAI/AltCLIP", *, batch_size: int = 32,
                 **load: Any) -> None:
        self.model = model if isinstance(model, AltCLIP) else AltCLIP(model, **load)
        self.batch_size = batch_size

    def embed_documents(self, texts: Sequence[str]) -> List[List[float]]:
        """One vector per text."""
        return self.model.embed_texts(list(texts), batch_size=self.batch_size).tolist()

    def embed_query(self, text: str) -> List[float]:
        """The vector of one query text."""
        return self.model.embed_texts([text])[0].tolist()

    def embed_image(self, uris: Sequence[Any]) -> List[List[float]]:
        """One vector per image (paths, bytes, PIL images or arrays), for multimodal stores."""
        return self.model.embed_images(list(uris)).tolist()

    async def aembed_documents(self, texts: Sequence[str]) -> List[List[float]]:
        """`embed_documents` on a worker thread (the engine releases the GIL)."""
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> List[float]:
        """`embed_query` on a worker thread."""
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.embed_query, text)
