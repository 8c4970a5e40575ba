"""`AltCLIP`: embeddings, similarity and zero-shot classification with numpy in and out."""
from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple, Union, overload

import numpy as np

from . import _altclip
from ._errors import ImageError
from ._images import to_engine_item
from ._progress import Progress

def _rows(buf: bytearray, dim: int) -> np.ndarray:
    """The engine's float32 rows as an (n, dim) array over the same memory."""
    return np.frombuffer(buf, dtype=np.float32).reshape(-1, dim)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class AltCLIP:
    """An AltCLIP model (BAAI's bilingual Chinese/English CLIP) on the Rust engine.

    `model` is a Hub id such as ``"BAAI/AltCLIP"`` (read from the Hugging Face cache, or
    downloaded) or a local directory in Hub layout. `dtype` is ``"f32"`` (exact to transformers),
    ``"bf16"`` (about 2x faster on CPUs with AVX512-BF16 or AMX), ``"f16"`` or ``"int8"``.
    `max_length` truncates texts (tokens, special ones included; default 77, at most 512).
    `towers` loads only ``"text"`` or ``"vision"`` to save memory. Images larger than
    `max_pixels` are refused.

    Every call releases the GIL: threads can share one model.
    """

    def __init__(
        self,
        model: Union[str, os.PathLike] = "BAAI/AltCLIP",
        dtype: str = "f32",
        *,
        revision: Optional[str] = None,
        max_length: Optional[int] = None,
        towers: str = "both",
        max_pixels: int = _altclip.DEFAULT_MAX_PIXELS,
    ) -> None:
        self._engine = _altclip.Engine(
            os.fspath(model), dtype, revision, max_length, towers, max_pixels
        )
        self.max_pixels = max_pixels

    @property
    def embedding_dim(self) -> int:
        """Width of the joint embedding space (768 for BAAI/AltCLIP)."""
        return self._engine.embedding_dim

    @property
    def dtype(self) -> str:
        """The dtype the model runs in."""
        return self._engine.dtype

    @property
    def logit_scale(self) -> float:
        """The learned log temperature: similarity logits are ``exp(logit_scale) * cosine``."""
        return self._engine.logit_scale

    @property
    def model_dir(self) -> str:
        """The directory the model's files were read from."""
        return self._engine.model_dir

    def __repr__(self) -> str:
        return f"AltCLIP({self._engine.name!r}, dtype={self.dtype!r}, kernels={self._engine.kernels!r})"

    def tokenize(self, texts: Union[str, Sequence[str]]) -> List[List[int]]:
        """Token ids per text, as the model sees them (``<s>`` and ``</s>`` included, truncated to
        `max_length`): what ``altclip tokenize`` prints and transformers' tokenizer returns."""
        return self._engine.tokenize(_texts(texts))

    def embed_texts(
        self,
        texts: Union[str, Sequence[str]],
        *,
        batch_size: int = 32,
        normalize: bool = True,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Text embeddings, an ``(N, embedding_dim)`` float32 array: L2-normalised, or with
        ``normalize=False`` the raw features (transformers' ``get_text_features``)."""
        texts = _texts(texts)
        _check_batch_size(batch_size)
        progress = Progress(len(texts), "texts", show_progress)
        try:
            buf = self._engine.embed_texts(texts, normalize, batch_size, progress.advance)
        finally:
            progress.close()
        return _rows(buf, self.embedding_dim)

    @overload
    def embed_images(
        self, images: Sequence[Any], *, batch_size: int = ..., normalize: bool = ...,
        errors: str = "raise", show_progress: bool = ...,
    ) -> np.ndarray: ...

    @overload
    def embed_images(
        self, images: Sequence[Any], *, batch_size: int = ..., normalize: bool = ...,
        errors: str, show_progress: bool = ...,
    ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]: ...

    def embed_images(
        self,
        images: Sequence[Any],
        *,
        batch_size: int = 8,
        normalize: bool = True,
        errors: str = "raise",
        show_progress: bool = False,
    ) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Image embeddings, an ``(N, embedding_dim)`` float32 array (L2-normalised, or the raw
        ``get_image_features`` with ``normalize=False``).

        Each image is a path, the bytes of an image file, a PIL image, or a uint8
        ``(height, width, 3)`` RGB array; all four give the same vector for the same pixels.
        Files are decoded as Pillow decodes them (JPEG by libjpeg-turbo) and turned by EXIF
        orientation, as ``transformers.image_utils.load_image`` does.

        A bad image raises `altclip.ImageError` naming it and its index (``err.index``), before
        its batch runs. With ``errors="skip"`` the call returns ``(embeddings, ok)`` instead:
        `ok` is a boolean mask over the inputs and `embeddings` holds the rows of the good ones,
        in order (``embeddings[i]`` is the image at ``np.flatnonzero(ok)[i]``).
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f'errors={errors!r}: expected "raise" or "skip"')
        if isinstance(images, (str, bytes, os.PathLike, np.ndarray)) or _looks_like_pil(images):
            images = [images]
        images = list(images)
        _check_batch_size(batch_size)
        skip = errors == "skip"
        items, indices = [], []
        for i, img in enumerate(images):
            try:
                items.append(to_engine_item(img, i))
                indices.append(i)
            except ImageError as e:
                if not skip:
                    raise _image_error(e.args[0], i, img) from None
        progress = Progress(len(items), "images", show_progress)
        try:
            buf, good, _failures = self._engine.embed_images(
                items, indices, normalize, skip, batch_size, progress.advance
            )
        except ImageError as e:
            message, index = e.args
            raise _image_error(message, index, images[index]) from None
        finally:
            progress.close()
        out = _rows(buf, self.embedding_dim)
        if not skip:
            return out
        ok = np.zeros(len(images), dtype=bool)
        ok[np.asarray(indices, dtype=np.intp)[np.asarray(good, dtype=bool)]] = True
        return out, ok

    def similarity(self, images: Any, texts: Any) -> np.ndarray:
        """Per image, the softmax over `texts` of ``exp(logit_scale) * cosine``: what
        transformers' ``logits_per_image.softmax(-1)`` gives, an ``(images, texts)`` array.
        Either argument may also be an already computed float embedding array."""
        img = _embedded(images, self.embed_images)
        txt = _embedded(texts, self.embed_texts)
        img = img / np.linalg.norm(img, axis=1, keepdims=True)
        txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
        return _softmax(np.float32(np.exp(self.logit_scale)) * (img @ txt.T))

    def classify(
        self,
        images: Any,
        labels: Sequence[str],
        *,
        templates: Union[str, Sequence[str]] = "auto",
        top_k: int = 5,
        batch_size: int = 8,
        show_progress: bool = False,
    ) -> List[List[Tuple[str, float]]]:
        """Zero-shot classification: per image, the `top_k` most probable labels as
        ``(label, probability)``, best first.

        Each label is embedded through prompt templates (CLIP's recipe: the mean of the
        normalised template embeddings): ``"auto"`` uses Chinese templates for labels with CJK
        characters and English ones otherwise; ``"zh"``, ``"en"``, ``"none"`` (the bare label),
        a path to a JSON list, or a list of strings containing ``{c}``.
        """
        labels = list(labels)
        if not labels:
            raise ValueError("labels: give at least one label")
        classes = self._class_embeddings(labels, templates)
        img = _embedded(images, lambda x: self.embed_images(
            x, batch_size=batch_size, show_progress=show_progress))
        probs = _softmax(np.float32(np.exp(self.logit_scale)) * (img @ classes.T))
        k = max(1, min(top_k, len(labels)))
        out = []
        for row in probs:
            best = np.argsort(-row, kind="stable")[:k]
            out.append([(labels[j], float(row[j])) for j in best])
        return out

    def _class_embeddings(self, labels: List[str], templates: Union[str, Sequence[str]]) -> np.ndarray:
        spec = templates if isinstance(templates, str) else [str(t) for t in templates]
        if isinstance(spec, list) and not spec:
            raise ValueError("templates: give at least one template with {c}")
        return _rows(self._engine.class_embeddings(labels, spec, 32), self.embedding_dim)


def _looks_like_pil(obj: Any) -> bool:
    return type(obj).__module__.startswith("PIL.")


def _texts(texts: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i}: expected str, got {type(t).__name__}")
    return texts


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")


def _embedded(x: Any, embed: Any) -> np.ndarray:
    """`x` itself when it is a float embedding array, else its embeddings."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.ndim == 2:
        return x.astype(np.float32, copy=False)
    return embed(x)


def _image_error(message: str, index: int, item: Any) -> ImageError:
    err = ImageError(message)
    err.index = index
    err.item = item
    return err
