"""16-bit PNGs and Pillow's RGB for them, for the RGB-conversion parity test.

Pillow reads a 16-bit RGB(A) PNG as 8-bit "RGB"/"RGBA" from each sample's high byte, a 16-bit
grey+alpha PNG as "RGBA" (high bytes), and a 16-bit grey PNG as "I;16", whose convert("RGB"/"RGBA")
clips at 255 rather than scaling. transformers' convert_to_rgb then composites non-RGB modes over
white. Each entry also records the SHA-256 of CLIPImageProcessor's (PIL backend, tiny-224's config)
float32 pixel_values, so the test checks the resized, normalised pixels bit for bit. Writes
tests/fixtures/images/{gray16,la16,rgb16,rgba16}.png and adds their references to
tests/fixtures/rgb/ (index.json keeps its other entries). Run after make_fixtures.py:

    python scripts/make_mode_fixtures.py
"""
import hashlib
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from transformers.image_transforms import convert_to_rgb

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "fixtures" / "images"
RGB = ROOT / "tests" / "fixtures" / "rgb"


def png16(samples: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG (Pillow cannot write 16-bit RGB): samples is [h, w, channels] uint16."""
    h, w = samples.shape[:2]
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def plane(w: int, h: int, seed: int) -> np.ndarray:
    """Values over the whole 16-bit range, with a band of small values (below 256) on top."""
    y, x = np.mgrid[0:h, 0:w]
    v = (x * 1031 + y * 7919 + seed * 4099) % 65536
    v[: h // 4] = (x[: h // 4] * 7 + y[: h // 4] * 3 + seed) % 300
    return v.astype(np.uint16)


def photo(w: int, h: int) -> Image.Image:
    """A smooth RGB image with edges: what lossy codecs are tested on."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0)
    g = 128 + 90 * np.cos((x + y) / 9.0)
    b = np.where((x - w / 2) ** 2 + (y - h / 2) ** 2 < (h / 3) ** 2, 220.0, 40 + x * 2.0)
    return Image.fromarray(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8), "RGB")


def write_pillow_modes() -> list[str]:
    """Modes and formats Pillow writes itself; returns the file names."""
    base = photo(48, 32)
    alpha = Image.fromarray((np.mgrid[0:32, 0:48][1] * 5 % 256).astype(np.uint8), "L")
    rgba = base.copy()
    rgba.putalpha(alpha)
    base.convert("1").save(IMAGES / "bilevel.png")
    pa = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pa.save(IMAGES / "pa.png", transparency=bytes(range(0, 256, 16)))
    base.convert("CMYK").save(IMAGES / "cmyk.tiff")
    base.save(IMAGES / "lossy.webp", quality=80)
    base.save(IMAGES / "lossless.webp", lossless=True)
    rgba.save(IMAGES / "rgba_lossy.webp", quality=80)
    rgba.save(IMAGES / "rgba32.bmp")
    frames = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(IMAGES / "anim.png", save_all=True, append_images=frames[1:], duration=100)
    names = ["bilevel.png", "pa.png", "cmyk.tiff", "lossy.webp", "lossless.webp", "rgba_lossy.webp",
             "rgba32.bmp", "anim.png"]
    return names + write_jpegs(photo(83, 61))


def write_jpegs(base: Image.Image) -> list[str]:
    """JPEGs in `images/jpeg/`: every subsampling Pillow writes at seven qualities, each baseline,
    progressive and optimised; restart intervals, greyscale and CMYK (Adobe, inverted); and, when
    libjpeg-turbo's `cjpeg` is installed (Debian's libjpeg-turbo-progs), the encodings Pillow cannot
    write: 4:4:0, 4:1:1 and arithmetic coding. Returns the names relative to `images/`."""
    rng = np.random.default_rng(3)
    noisy = np.asarray(base).astype(np.int16) + rng.integers(-12, 13, (base.height, base.width, 3))
    base = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")
    out = IMAGES / "jpeg"
    out.mkdir(exist_ok=True)
    names = []

    def save(name: str, img: Image.Image, **options) -> None:
        img.save(out / name, **options)
        names.append(f"jpeg/{name}")

    for sub, tag in [(0, "444"), (1, "422"), (2, "420")]:
        for q in (50, 60, 70, 80, 90, 95, 100):
            save(f"{tag}_q{q}.jpg", base, quality=q, subsampling=sub)
            save(f"{tag}_q{q}_progressive.jpg", base, quality=q, subsampling=sub, progressive=True)
            save(f"{tag}_q{q}_optimized.jpg", base, quality=q, subsampling=sub, optimize=True)
    save("restart_blocks.jpg", base, quality=85, restart_marker_blocks=3)
    save("restart_rows.jpg", base, quality=85, restart_marker_rows=1, subsampling=0)
    save("gray.jpg", base.convert("L"), quality=85)
    save("cmyk.jpg", base.convert("CMYK"), quality=90)
    cjpeg = shutil.which("cjpeg")
    if cjpeg:
        ppm = out / "source.ppm"
        base.save(ppm)
        for name, flags in [("cjpeg_440.jpg", ["-sample", "1x2"]), ("cjpeg_411.jpg", ["-sample", "4x1"]),
                            ("cjpeg_arithmetic.jpg", ["-arithmetic"]),
                            ("cjpeg_restart.jpg", ["-restart", "1", "-sample", "2x2"])]:
            subprocess.run([cjpeg, "-quality", "85", *flags, "-outfile", str(out / name), str(ppm)], check=True)
            names.append(f"jpeg/{name}")
        ppm.unlink()
    write_imagecodecs_jpegs(base, out, names)
    return names


def write_imagecodecs_jpegs(base: Image.Image, out: Path, names: list[str]) -> None:
    """With imagecodecs (libjpeg-turbo 3), what neither Pillow nor cjpeg 2.1 writes: an Adobe YCCK
    JPEG (transform 2, as Photoshop writes CMYK) from a CMYK image whose black channel varies, and a
    12-bit JPEG, which Pillow cannot open; it is kept for the refusal test, with no reference."""
    try:
        import imagecodecs
    except ImportError:
        print("imagecodecs is not installed: ycck.jpg and precision12.jpg are left as they are")
        return
    rgb = np.asarray(base).astype(np.int32)
    k = 255 - rgb.max(axis=-1, keepdims=True)
    cmy = 255 - rgb - k
    cmyk = np.concatenate([cmy, k], axis=-1).astype(np.uint8)
    ycck = imagecodecs.jpeg8_encode(cmyk, colorspace="CMYK", outcolorspace="YCCK", level=90)
    (out / "ycck.jpg").write_bytes(ycck)
    img = Image.open(out / "ycck.jpg")
    assert img.mode == "CMYK" and img.info.get("adobe_transform") == 2, img.info
    names.append("jpeg/ycck.jpg")
    deep = (rgb * 16 + 7).astype(np.uint16)
    (out / "precision12.jpg").write_bytes(imagecodecs.jpeg8_encode(deep, bitspersample=12, level=90))
    try:
        Image.open(out / "precision12.jpg").load()
    except Exception as e:  # noqa: BLE001 - whatever Pillow raises, it must raise
        print(f"Pillow refuses precision12.jpg as expected: {e}")
    else:
        raise AssertionError("Pillow opened a 12-bit JPEG; give it a reference instead")


def main() -> None:
    w, h = 40, 24
    files = {
        "gray16.png": (0, [plane(w, h, 1)]),
        "la16.png": (4, [plane(w, h, 2), plane(w, h, 3)]),
        "rgb16.png": (2, [plane(w, h, 4), plane(w, h, 5), plane(w, h, 6)]),
        "rgba16.png": (6, [plane(w, h, 7), plane(w, h, 8), plane(w, h, 9), plane(w, h, 10)]),
    }
    for name, (color_type, planes) in files.items():
        (IMAGES / name).write_bytes(png16(np.stack(planes, axis=-1), color_type))
    names = list(files) + write_pillow_modes()
    # make_fixtures.py's entries stay; this script's own are rewritten.
    index = [e for e in json.loads((RGB / "index.json").read_text())
             if e["source"] not in names and (IMAGES / e["source"]).exists()]
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(ROOT / "tests" / "fixtures" / "tiny-224", backend="pil")
    assert processor.backend == "pil", processor
    for name in names:
        img = Image.open(IMAGES / name)
        pixels = processor(images=Image.open(IMAGES / name), return_tensors="np")["pixel_values"][0]
        digest = hashlib.sha256(pixels.astype("<f4").tobytes()).hexdigest()
        rgb = convert_to_rgb(img, return_numpy=True)
        stem = name.replace("/", "_").replace(".", "_")
        Image.fromarray(rgb, "RGB").save(RGB / f"{stem}.png")
        index.append({"source": name, "mode": img.mode, "composited_over_white": img.mode != "RGB",
                      "width": int(rgb.shape[1]), "height": int(rgb.shape[0]), "file": f"{stem}.png",
                      "pixel_values_sha256": digest})
    (RGB / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
