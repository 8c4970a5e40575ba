"""HEIC and AVIF images, and the pixels Pillow decodes from them, for the decoder's parity tests.

Writes tests/fixtures/images/heif/:
- NAME.heic, encoded by pillow-heif (x265) from the PNG fixtures, and NAME.avif, encoded by
  Pillow's own AVIF plugin (libavif);
- NAME.heic.png / NAME.avif.png: what Pillow gives when it opens that file (pillow-heif's opener
  for HEIC, Pillow's AVIF plugin for AVIF), in the mode it opens it in (RGB or RGBA), saved
  losslessly. The Rust test decodes both files and compares the pixels.

    pip install pillow==13.0.0 numpy==2.4.6 pillow-heif==1.8.1
    python scripts/make_heif_fixtures.py
"""
from pathlib import Path

import pillow_heif
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tests" / "fixtures" / "images"
OUT = SRC / "heif"

# name: (source PNG, encoder options)
IMAGES = {
    "photo": ("photo.png", {}),
    "rgba": ("rgba.png", {}),
    "small": ("small.png", {}),
    "tall": ("tall.png", {}),
}


def opened(path: Path) -> Image.Image:
    """As transformers' load_image opens a file: Image.open, then exif_transpose."""
    im = Image.open(path)
    im.load()
    return ImageOps.exif_transpose(im)


def main() -> None:
    pillow_heif.register_heif_opener()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (source, options) in IMAGES.items():
        src = Image.open(SRC / source)
        src.load()
        heic = OUT / f"{name}.heic"
        src.save(heic, quality=90, **options)
        avif = OUT / f"{name}.avif"
        src.save(avif, quality=90, **options)
        for path in (heic, avif):
            im = opened(path)
            assert im.mode in ("RGB", "RGBA"), (path, im.mode)
            assert im.size == src.size, (path, im.size, src.size)
            im.save(path.with_name(path.name + ".png"))
    # A photo whose EXIF says "rotate 90° clockwise" (orientation 6): the engine, like
    # transformers after pillow-heif, shows it upright.
    src = Image.open(SRC / "photo.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    path = OUT / "rotated.heic"
    src.save(path, quality=90, exif=exif.tobytes())
    opened(path).save(path.with_name(path.name + ".png"))


if __name__ == "__main__":
    main()
