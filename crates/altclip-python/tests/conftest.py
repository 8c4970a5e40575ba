"""Shared fixtures: the repository's golden fixtures (tiny random models with transformers'
reference outputs), read through the Python API."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import altclip

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
IMAGES = FIXTURES / "images"
MODELS = ["tiny-224", "tiny-odd", "tiny-m18"]


def reference(model: str) -> dict:
    return json.loads((FIXTURES / model / "reference.json").read_text())


def assert_close(what: str, ours: np.ndarray, theirs, min_cos: float = 0.99999, max_abs: float = 1e-4) -> None:
    theirs = np.asarray(theirs, dtype=np.float64)
    ours = np.asarray(ours, dtype=np.float64)
    cos = ours @ theirs / (np.linalg.norm(ours) * np.linalg.norm(theirs))
    worst = np.abs(ours - theirs).max()
    assert cos >= min_cos and worst <= max_abs, f"{what}: cosine {cos}, max |diff| {worst}"


@pytest.fixture(scope="session")
def tiny() -> altclip.AltCLIP:
    return altclip.AltCLIP(FIXTURES / "tiny-224")


def altclip_binary():
    """The CLI that `cargo build` / `cargo test` left in target/ (or $ALTCLIP_BIN); skips the
    test when there is none, unless ALTCLIP_REQUIRE_TOOLS is set (CI)."""
    for candidate in [os.environ.get("ALTCLIP_BIN"), ROOT / "target/debug/altclip", ROOT / "target/release/altclip",
                      shutil.which("altclip")]:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    if os.environ.get("ALTCLIP_REQUIRE_TOOLS"):
        pytest.fail("no altclip binary in target/ and ALTCLIP_REQUIRE_TOOLS is set: run cargo build first")
    pytest.skip("skipped: no altclip binary (cargo build -p altclip-cli, or set ALTCLIP_BIN)")
