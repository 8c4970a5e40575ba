"""Image inputs, turned into what the engine reads: a path, an encoded file's bytes, or decoded RGB."""
from __future__ import annotations

import os
from typing import Any, Tuple, Union

import numpy as np

# What the engine takes per image (see `Item` in src/images.rs).
EngineItem = Union[str, bytes, Tuple[int, int, bytes]]


def _is_pil(obj: Any) -> bool:
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "convert") and hasattr(obj, "mode")


def _pil_to_rgb(img: Any) -> np.ndarray:
    """Pillow's pixels as transformers' `convert_to_rgb` makes them: RGB stays, anything else is
    converted to RGBA and composited over white, with Pillow's own operations (so the result is
    the one transformers' processor sees). EXIF orientation is not applied, as the processor does
    not apply it to an image object."""
    from PIL import Image

    if img.mode != "RGB":
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    return np.asarray(img)


def _array_item(arr: np.ndarray, index: int) -> Tuple[int, int, bytes]:
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        from ._errors import ImageError

        raise ImageError(
            f"image {index} (array): expected a uint8 array of shape (height, width, 3) holding RGB, "
            f"got {arr.dtype} {tuple(arr.shape)}",
            index,
        )
    h, w = arr.shape[:2]
    return (int(w), int(h), np.ascontiguousarray(arr).tobytes())


def to_engine_item(obj: Any, index: int) -> EngineItem:
    """One image as the engine takes it: paths and bytes are decoded in Rust (Pillow-exact,
    EXIF-oriented as `transformers.image_utils.load_image` does), PIL images and arrays are
    taken as decoded pixels."""
    from ._errors import ImageError

    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        return path if isinstance(path, str) else os.fsdecode(path)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, np.ndarray):
        return _array_item(obj, index)
    if _is_pil(obj):
        return _array_item(_pil_to_rgb(obj), index)
    raise ImageError(
        f"image {index}: a {type(obj).__name__} is not an image; pass a path, the file's bytes, "
        "a PIL image or a uint8 (height, width, 3) RGB array",
        index,
    )
