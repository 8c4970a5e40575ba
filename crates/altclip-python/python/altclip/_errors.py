"""The package's exceptions, defined in the extension module so Rust and Python raise the same types."""
from ._altclip import ImageError, ModelError

__all__ = ["ImageError", "ModelError"]
