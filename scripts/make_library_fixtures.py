"""JPEGs carrying EXIF dates, cameras and GPS positions, for the library's metadata and filter tests.

Writes tests/fixtures/library/*.jpg and a .heic (small, distinct pictures) and expected.json, what each file's
EXIF says as the index records it (ISO date taken, make, model, signed degrees). Each file is read
back with Pillow to check the tags landed. Deterministic; run from anywhere (pillow-heif 1.8.1 for
the HEIC):

    python scripts/make_library_fixtures.py
"""
import json
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "library"

# name: (colour seed, make, model, EXIF date, (lat, lon) or None)
PHOTOS = {
    "shanghai_2023.jpg": (1, "Apple", "iPhone 13", "2023:07:14 18:03:11", (31.2304, 121.4737)),
    "beijing_2022.jpg": (2, "Canon", "Canon EOS R5", "2022:12:25 09:30:00", (39.9042, 116.4074)),
    "sydney_2024.jpg": (3, "Apple", "iPhone 15 Pro", "2024:02:03 07:45:10", (-33.8688, 151.2093)),
    "newyork_2024.jpg": (4, "SONY", "ILCE-7M4", "2024:06:30 21:10:05", (40.7128, -74.0060)),
    "nogps_2021.jpg": (5, "Apple", "iPhone 8", "2021:03:01 12:00:00", None),
    "noexif.jpg": (6, None, None, None, None),
    # An iPhone's HEIC (pillow-heif writes its EXIF as a HEIF Exif item).
    "paris_2025.heic": (7, "Apple", "iPhone 16 Pro", "2025:05:01 10:00:00", (48.8566, 2.3522)),
}


def dms(value: float):
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = round(((value - d) * 60 - m) * 60, 4)
    return (float(d), float(m), s)


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:48, 0:64].astype(np.float64)
    base = rng.uniform(40, 215, 3)
    rgb = np.stack([base[i] + 30 * np.sin(x / (3 + seed + i) + y / (5 + i)) for i in range(3)], -1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def main() -> None:
    pillow_heif.register_heif_opener()
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (seed, make, model, date, place) in PHOTOS.items():
        exif = Image.Exif()
        if make:
            exif[0x010F] = make
            exif[0x0110] = model
            exif[0x0132] = date
            exif.get_ifd(0x8769)[0x9003] = date  # DateTimeOriginal
        if place:
            lat, lon = place
            gps = exif.get_ifd(0x8825)
            gps[1] = "N" if lat >= 0 else "S"
            gps[2] = dms(lat)
            gps[3] = "E" if lon >= 0 else "W"
            gps[4] = dms(lon)
        path = OUT / name
        picture(seed).save(path, quality=90, exif=exif.tobytes() if make or place else b"")
        back = Image.open(path).getexif()
        assert back.get(0x010F) == make, (name, back)
        signed = None
        if place:
            g = back.get_ifd(0x8825)
            signed = [(-1 if g[1] == "S" else 1) * sum(float(v) / u for v, u in zip(g[2], (1, 60, 3600))),
                      (-1 if g[3] == "W" else 1) * sum(float(v) / u for v, u in zip(g[4], (1, 60, 3600)))]
        expected[name] = {
            "taken": date.replace(":", "-", 2).replace(" ", "T") if date else None,
            "make": make,
            "model": model,
            "lat": signed[0] if signed else None,
            "lon": signed[1] if signed else None,
            "width": 64,
            "height": 48,
        }
    # A burst: one scene shot twice a second apart (the second with a little noise), for dedup.
    burst = OUT / "burst"
    burst.mkdir(exist_ok=True)
    rng = np.random.default_rng(8)
    for i, date in enumerate(["2024:08:10 16:20:01", "2024:08:10 16:20:02"]):
        pixels = np.asarray(picture(8).resize((256, 192), Image.BICUBIC)).astype(np.int16)
        if i:
            pixels += rng.integers(-3, 4, pixels.shape, dtype=np.int16)
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = "Apple", "iPhone 13"
        exif.get_ifd(0x8769)[0x9003] = date
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(
            burst / f"IMG_{i + 1:04}.jpg", quality=90, exif=exif.tobytes()
        )
    (OUT / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
