"""Bad inputs raise errors that name the item; nothing else is lost."""
import numpy as np
import pytest

import altclip
from conftest import FIXTURES, IMAGES


def test_a_bad_image_raises_image_error_naming_it(tiny):
    good = IMAGES / "photo.png"
    bad = IMAGES / "notimage.png"
    with pytest.raises(altclip.ImageError) as caught:
        tiny.embed_images([good, good, bad, good], batch_size=2)
    err = caught.value
    assert isinstance(err, ValueError)
    assert err.index == 2 and err.item == bad
    assert "image 2" in str(err) and "notimage.png" in str(err)


def test_errors_skip_returns_the_good_rows_and_a_mask(tiny):
    good = IMAGES / "photo.png"
    items = [IMAGES / "corrupt.png", good, b"not an image", np.zeros((2, 2), np.uint8), good, 42]
    rows, ok = tiny.embed_images(items, errors="skip", batch_size=2)
    assert ok.tolist() == [False, True, False, False, True, False]
    expected = tiny.embed_images([good])
    np.testing.assert_array_equal(rows, np.repeat(expected, 2, axis=0))


@pytest.mark.parametrize(
    "item, message",
    [
        (np.zeros((4, 4), np.uint8), "shape \\(height, width, 3\\)"),
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (42, "not an image"),
        (b"", "image 0 \\(bytes\\)"),
        (str(IMAGES / "missing.png"), "missing.png"),
    ],
)
def test_each_kind_of_bad_item_is_named(tiny, item, message):
    with pytest.raises(altclip.ImageError, match=message):
        tiny.embed_images([item])


def test_a_missing_model_raises_model_error(tmp_path):
    with pytest.raises(altclip.ModelError, match="no-such-model"):
        altclip.AltCLIP(tmp_path / "no-such-model")
    assert issubclass(altclip.ModelError, OSError)


def test_a_wrong_dtype_is_refused_with_the_choices():
    with pytest.raises(ValueError, match='"f32".*"bf16"'):
        altclip.AltCLIP(FIXTURES / "tiny-224", dtype="float64")


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="batch_size"):
        tiny.embed_texts(["a"], batch_size=0)
    with pytest.raises(ValueError, match="errors="):
        tiny.embed_images([IMAGES / "photo.png"], errors="ignore")
    with pytest.raises(TypeError, match="text 1"):
        tiny.embed_texts(["a", 3])


def test_a_text_only_model_refuses_images_clearly():
    model = altclip.AltCLIP(FIXTURES / "tiny-224", towers="text")
    assert model.embed_texts(["一只猫"]).shape == (1, model.embedding_dim)
    with pytest.raises(ValueError, match="vision"):
        model.embed_images([IMAGES / "photo.png"])
