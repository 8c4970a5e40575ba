"""Type stubs of the extension module (src/*.rs). Use the public classes in `altclip` instead."""
from typing import Callable, List, Optional, Sequence, Tuple, Union

__version__: str
DEFAULT_MAX_PIXELS: int

class ImageError(ValueError):
    """An image could not be read, decoded or preprocessed; the message names the item and its index."""

class ModelError(OSError):
    """A model (or an index's model) could not be found, read or used."""

EngineItem = Union[str, bytes, Tuple[int, int, bytes]]

class Engine:
    def __init__(
        self,
        model: str,
        dtype: str = "f32",
        revision: Optional[str] = None,
        max_length: Optional[int] = None,
        towers: str = "both",
        max_pixels: int = ...,
    ) -> None: ...
    @property
    def embedding_dim(self) -> int: ...
    @property
    def logit_scale(self) -> float: ...
    @property
    def dtype(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def model_dir(self) -> str: ...
    @property
    def kernels(self) -> str: ...
    def tokenize(self, texts: Sequence[str]) -> List[List[int]]: ...
    def embed_texts(
        self, texts: Sequence[str], normalize: bool, batch_size: int,
        on_batch: Optional[Callable[[int], None]] = None,
    ) -> bytearray: ...
    def class_embeddings(self, labels: Sequence[str], templates: Union[str, Sequence[str]], batch_size: int) -> bytearray: ...
    def embed_images(
        self, items: Sequence[EngineItem], indices: Sequence[int], normalize: bool, skip_errors: bool,
        batch_size: int, on_batch: Optional[Callable[[int], None]] = None,
    ) -> Tuple[bytearray, List[bool], List[Tuple[int, str]]]: ...

class Library:
    def __init__(self, path: str, exact: bool = False) -> None: ...
    @property
    def model(self) -> Optional[str]: ...
    @property
    def revision(self) -> Optional[str]: ...
    def __len__(self) -> int: ...
    def search(
        self, engine: Engine, words: Sequence[str], top_k: int, max_pixels: int,
        after: Optional[str] = None, before: Optional[str] = None, camera: Optional[str] = None,
        path: Optional[str] = None, near: Optional[Tuple[float, float, float]] = None,
        kind: Optional[str] = None, min_score: Optional[float] = None, sort: str = "score",
    ) -> List[Tuple[str, float, Optional[float], Optional[str], Optional[Tuple[Any, ...]]]]: ...
