"""The GIL is released while the engine works: threads share one model and get the same results;
Ctrl-C stops a long call between batches; progress goes to stderr."""
import _thread
import threading
import time

import numpy as np
import pytest

from conftest import IMAGES, reference


def test_two_threads_embedding_at_once_match_one(tiny):
    ref = reference("tiny-224")
    paths = [IMAGES / n for n in ref["images"] if n != "rotated.jpg"] * 3
    texts = ref["texts"] * 4
    alone_images = tiny.embed_images(paths, batch_size=4)
    alone_texts = tiny.embed_texts(texts, batch_size=8)
    results, errors = {}, []

    def work(key, fn):
        try:
            results[key] = [fn() for _ in range(3)]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=("images", lambda: tiny.embed_images(paths, batch_size=4))),
        threading.Thread(target=work, args=("texts", lambda: tiny.embed_texts(texts, batch_size=8))),
        threading.Thread(target=work, args=("images2", lambda: tiny.embed_images(paths, batch_size=4))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got in results["images"] + results["images2"]:
        np.testing.assert_array_equal(got, alone_images)
    for got in results["texts"]:
        np.testing.assert_array_equal(got, alone_texts)


def test_the_gil_is_free_while_the_model_runs(tiny):
    paths = [IMAGES / "photo.png"] * 64
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    t = threading.Thread(target=tick)
    t.start()
    start = time.monotonic()
    tiny.embed_images(paths, batch_size=64)  # one batch: one long call into Rust
    elapsed = time.monotonic() - start
    done.set()
    t.join()
    during = [x for x in ticks if start <= x <= start + elapsed]
    # Holding the GIL for the whole call would leave (almost) no ticks inside it.
    assert len(during) >= 5, (len(during), elapsed)


def test_ctrl_c_stops_between_batches(tiny):
    paths = [IMAGES / "photo.png"] * 5000
    timer = threading.Timer(0.3, _thread.interrupt_main)
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        tiny.embed_images(paths, batch_size=1)
    stopped = time.monotonic() - start
    timer.cancel()
    full = time.monotonic()
    tiny.embed_images(paths[:40], batch_size=1)
    per_ten_percent = time.monotonic() - full
    assert stopped < 0.3 + 10 * per_ten_percent, (stopped, per_ten_percent)


def test_show_progress_draws_a_bar_on_stderr(tiny, capsys):
    tiny.embed_images([IMAGES / "photo.png"] * 3, batch_size=1, show_progress=True)
    err = capsys.readouterr().err
    assert "images [" in err and "3/3" in err
    tiny.embed_texts(["a"] * 3, batch_size=1)
    assert capsys.readouterr().err == ""
