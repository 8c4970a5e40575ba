"""`altclip.Index` ranks as `altclip search` does, on an index the CLI built."""
import json
import shutil
import subprocess

import numpy as np
import pytest

import altclip
from conftest import FIXTURES, IMAGES, altclip_binary

PHOTOS = ["photo.png", "gray.png", "la.png", "rgba.png", "palette.png", "wide.png", "tall.png", "small.png",
          "photo.webp", "photo.bmp"]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    binary = altclip_binary()
    root = tmp_path_factory.mktemp("library")
    for name in PHOTOS:
        shutil.copy(IMAGES / name, root / name)
    shutil.copy(root / "photo.png", root / "copy-of-photo.png")  # same content, two paths
    shutil.copy(FIXTURES / "library" / "paris_2025.heic", root / "paris.heic")  # EXIF date, camera, GPS
    model = str(FIXTURES / "tiny-224")
    subprocess.run([binary, "index", str(root), "--model", model, "--vector-dtype", "f32"], check=True,
                   capture_output=True)
    return binary, root, root / ".altclip" / "index.db"


def cli_hits(binary, db, words, top):
    out = subprocess.run([binary, "search", "--db", str(db), "--json", "-n", str(top), *words], check=True,
                         capture_output=True, text=True).stdout
    return list(map(json.loads, out.splitlines()))


def cli_search(binary, db, words, top):
    return [(hit["path"], hit["score"]) for hit in cli_hits(binary, db, words, top)]


def test_hits_carry_the_metadata_the_cli_prints(library):
    binary, root, db = library
    hits = altclip.Index(db).search("巴黎", top_k=20)
    theirs = {h["path"]: h for h in cli_hits(binary, db, ["巴黎"], 20)}
    assert sorted(h.path for h in hits) == sorted(theirs)
    for hit in hits:
        cli = theirs[hit.path]
        for field in ["kind", "taken", "taken_from", "make", "model", "camera", "lat", "lon", "width", "height", "at"]:
            assert getattr(hit, field) == cli.get(field), (hit.path, field)
        path, score = hit
        assert (path, score) == (hit.path, hit.score)
    paris = next(h for h in hits if h.path.endswith("paris.heic"))
    assert (paris.camera, paris.taken, paris.taken_from) == ("Apple iPhone 16 Pro", "2025-05-01T10:00:00", "exif")
    assert abs(paris.lat - 48.8566) < 1e-6 and (paris.width, paris.height) == (64, 48)
    assert "paris.heic" in repr(paris)


@pytest.mark.parametrize(
    "words",
    [["一只在草地上的猫"], ["a photo of a dog"], ["2:一只猫", "+", "海边", "-", "雪"], ["IMAGE"]],
)
def test_search_ranks_as_the_cli(library, words):
    binary, root, db = library
    words = [str(root / "photo.png") if w == "IMAGE" else w for w in words]
    index = altclip.Index(db)
    assert len(index) == len(PHOTOS) + 2  # the copy and the HEIC
    ours = index.search(words if len(words) > 1 else words[0], top_k=6)
    theirs = cli_search(binary, db, words, 6)
    assert [p for p, _ in ours] == [p for p, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-4)


def test_an_image_query_finds_itself_and_its_copy_first(library):
    _, root, db = library
    # photo.webp and photo.bmp hold the same pixels as photo.png: four files tie at the top.
    hits = dict(altclip.Index(db).search(str(root / "photo.png"), top_k=4))
    assert {str(root / n) for n in ["photo.png", "copy-of-photo.png", "photo.webp", "photo.bmp"]} == set(hits)
    assert all(abs(s - 1.0) < 1e-3 for s in hits.values()), hits


def test_a_loaded_model_is_reused_and_another_model_refused(library, tiny):
    _, _, db = library
    assert altclip.Index(db, tiny).search("一只猫", top_k=3) == altclip.Index(db).search("一只猫", top_k=3)
    other = altclip.AltCLIP(FIXTURES / "tiny-odd")
    with pytest.raises(altclip.ModelError, match="tiny-224"):
        altclip.Index(db, other).search("一只猫")


def test_a_missing_database_and_bad_queries_are_errors(library, tmp_path):
    _, _, db = library
    with pytest.raises(FileNotFoundError, match="altclip index"):
        altclip.Index(tmp_path / "index.db")
    with pytest.raises(ValueError, match="between two terms"):
        altclip.Index(db).search(["+", "cat"])
    with pytest.raises(ValueError, match="top_k"):
        altclip.Index(db).search("cat", top_k=0)


def test_filters_pass_through_as_the_cli_has_them(library):
    binary, root, db = library
    index = altclip.Index(db)
    for kwargs, flags in [
        ({"path": "*/photo.*"}, ["--path", "*/photo.*"]),
        ({"min_score": 0.0}, ["--min-score", "0.0"]),
        ({"sort": "date", "min_score": -1.0}, ["--sort", "date", "--min-score", "-1.0"]),
        ({"kind": "video"}, ["--kind", "video"]),
        ({"after": "2000", "before": "2100-01-01"}, ["--after", "2000", "--before", "2100-01-01"]),
    ]:
        ours = [p for p, _ in index.search("一只猫", top_k=20, **kwargs)]
        theirs = [p for p, _ in cli_search(binary, db, ["一只猫", *flags], 20)]
        assert ours == theirs, kwargs
    with pytest.raises(ValueError, match="date"):
        index.search("一只猫", after="July")
    with pytest.raises(ValueError, match="sort"):
        index.search("一只猫", sort="size")
