"""Paths, bytes, PIL images and numpy arrays of the same pixels give the same vectors."""
import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES

# RGB files, files with alpha or a palette (composited over white, as transformers does), grey.
NAMES = ["photo.png", "photo.jpg", "la.png", "rgba.png", "palette.png", "gray.png", "jpeg/420_q90.jpg"]


@pytest.mark.parametrize("name", NAMES)
def test_every_input_kind_gives_the_same_vector(tiny, name):
    path = IMAGES / name
    pil = Image.open(path)
    pil.load()
    from_path = tiny.embed_images([path])
    from_str = tiny.embed_images([str(path)])
    from_bytes = tiny.embed_images([path.read_bytes()])
    from_pil = tiny.embed_images([pil])
    from_array = tiny.embed_images([tiny_rgb(pil)])
    for what, got in [("str", from_str), ("bytes", from_bytes), ("PIL", from_pil), ("array", from_array)]:
        np.testing.assert_array_equal(got, from_path, err_msg=f"{name}: {what}")


def tiny_rgb(pil):
    """transformers' convert_to_rgb, as the package applies it to PIL images."""
    from altclip._images import _pil_to_rgb

    return _pil_to_rgb(pil)


def test_a_single_image_and_mixed_batches(tiny):
    path = IMAGES / "photo.png"
    one = tiny.embed_images(path)
    assert one.shape == (1, tiny.embedding_dim)
    mixed = tiny.embed_images([path, path.read_bytes(), Image.open(path), np.asarray(Image.open(path))], batch_size=3)
    np.testing.assert_array_equal(mixed, np.repeat(one, 4, axis=0))


def test_non_contiguous_arrays_are_read_as_their_pixels(tiny):
    arr = np.asarray(Image.open(IMAGES / "photo.png").convert("RGB"))
    flipped = arr[:, ::-1]
    np.testing.assert_array_equal(tiny.embed_images([flipped]), tiny.embed_images([np.ascontiguousarray(flipped)]))


def test_returned_arrays_are_writable_float32(tiny):
    out = tiny.embed_images([IMAGES / "photo.png"])
    assert out.dtype == np.float32 and out.flags.writeable and out.flags.c_contiguous
    out *= 2  # a caller may scale in place
    txt = tiny.embed_texts(["一只猫"])
    assert txt.dtype == np.float32 and txt.flags.writeable
