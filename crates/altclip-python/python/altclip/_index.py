"""`Index`: read-only search over a database built by `altclip index`."""
from __future__ import annotations

import os
import threading
from typing import List, Optional, Sequence, Tuple, Union

from . import _altclip
from ._model import AltCLIP


class Index:
    """An `altclip index` database, opened for searching (never written).

    The model is the one the index was built with, loaded on the first search (only the text
    tower for text queries), unless `model` names another copy of it (a directory or Hub id) or
    is an `AltCLIP` already loaded; a different model is refused, as its vectors would not
    compare. `exact=True` scans every vector even where the index keeps an HNSW graph.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike],
        model: Union[None, str, os.PathLike, AltCLIP] = None,
        *,
        dtype: str = "f32",
        exact: bool = False,
    ) -> None:
        self.path = os.path.expanduser(os.fspath(path))
        self._library = _altclip.Library(self.path, exact)
        self._dtype = dtype
        self._lock = threading.Lock()
        self._model: Optional[AltCLIP] = model if isinstance(model, AltCLIP) else None
        self._model_name = None if model is None or isinstance(model, AltCLIP) else os.fspath(model)
        self._text_only: Optional[AltCLIP] = None

    def __len__(self) -> int:
        """The number of indexed files."""
        return len(self._library)

    def __repr__(self) -> str:
        return f"Index({self.path!r}, {len(self)} files, model={self._library.model!r})"

    @property
    def model_name(self) -> Optional[str]:
        """The model the index was built with, as recorded (a Hub id or a directory)."""
        return self._library.model

    def search(
        self,
        query: Union[str, os.PathLike, Sequence[str]],
        top_k: int = 10,
        *,
        after: Optional[str] = None,
        before: Optional[str] = None,
        camera: Optional[str] = None,
        path: Optional[str] = None,
        near: Optional[Tuple[float, float, float]] = None,
        kind: Optional[str] = None,
        min_score: Optional[float] = None,
        sort: str = "score",
    ) -> List["Hit"]:
        """The `top_k` best files for `query`, best first, each a :class:`Hit`: it unpacks as
        ``(path, cosine)`` and carries the file's metadata (``hit.taken``, ``hit.camera``, a
        video's ``hit.at``...).

        `query` is a text in any language the model knows, an image path (image-to-image
        search), or the words of a mix as ``altclip search`` takes them, e.g.
        ``["2:一只猫", "+", "beach.jpg", "-", "雪"]``: terms joined by ``+``/``-``, each
        optionally weighted with ``W:``.

        Filters, as ``altclip search`` has them, choose the candidates before the top-k: `after`
        and `before` (ISO dates or times, EXIF's date taken or else the file's time; `before` is
        exclusive), `camera` (text in the make or model), `path` (a glob over the absolute path),
        `near` (``(lat, lon, km)``), `kind` (``"photo"``), `min_score` (a cosine cutoff), and
        ``sort="date"`` for newest first among the matches above the cutoff.
        """
        if isinstance(query, (str, os.PathLike)):
            words = [os.fspath(query)]
        else:
            words = [os.fspath(w) for w in query]
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k={top_k!r}: expected a positive integer")
        text_only = not any(_names_a_file(w) for w in words if w not in ("+", "-"))
        model = self._model_for(text_only)
        hits = self._library.search(model._engine, words, top_k, model.max_pixels, after, before, camera, path,
                                    near, kind, min_score, sort)
        return [Hit(*h) for h in hits]

    def _model_for(self, text_only: bool) -> AltCLIP:
        with self._lock:
            if self._model is not None:
                return self._model
            if text_only and self._text_only is not None:
                return self._text_only
            name = self._model_name or self._library.model
            if name is None:
                raise _altclip.ModelError(f"{self.path}: the index has no model yet; build it with `altclip index`")
            loaded = AltCLIP(name, self._dtype, revision=self._library.revision,
                             towers="text" if text_only else "both")
            if text_only:
                self._text_only = loaded
            else:
                self._model, self._text_only = loaded, None
            return loaded


class Hit(tuple):
    """One search result. It is the tuple ``(path, score)``, so ``for path, score in hits`` and
    ``dict(hits)`` work, and it carries what the index recorded of the file:

    - ``path`` (absolute), ``score`` (cosine similarity to the query);
    - ``at``: for a video, the seconds into it of its best-matching frame, else ``None``;
    - ``kind`` (``"photo"`` or ``"video"``), ``taken`` (ISO time: EXIF's date taken, a video's
      creation time, or the file's modification time) and ``taken_from`` (``"exif"``,
      ``"video"`` or ``"file"``);
    - ``make``, ``model`` and ``camera`` (the two as ``altclip search`` shows them), ``lat`` / ``lon`` (degrees),
      ``width`` / ``height`` (pixels, as displayed), a video's ``duration`` (seconds).

    Metadata the file lacks is ``None``.
    """

    def __new__(cls, path: str, score: float, at: Optional[float] = None, camera: Optional[str] = None,
                media: Optional[tuple] = None) -> "Hit":
        hit = super().__new__(cls, (path, score))
        hit.at, hit.camera = at, camera
        (hit.kind, hit.taken, hit.taken_from, hit.make, hit.model, hit.lat, hit.lon, hit.width, hit.height,
         hit.duration) = media if media is not None else (None,) * 10
        return hit

    @property
    def path(self) -> str:
        return self[0]

    @property
    def score(self) -> float:
        return self[1]

    def __repr__(self) -> str:
        at = f" @ {self.at:.1f} s" if self.at is not None else ""
        return f"Hit({self.path!r}{at}, score={self.score:.4f}, taken={self.taken!r})"


def _names_a_file(word: str) -> bool:
    """Whether a query term is an image path, with or without a ``W:`` weight (as the CLI's
    parser decides it; a stray match only loads the image tower too)."""
    return os.path.isfile(word) or os.path.isfile(word.split(":", 1)[-1])
