"""AltCLIP, BAAI's bilingual Chinese/English CLIP, on a Rust engine: embeddings exact to
transformers, with numpy in and out and no PyTorch.

    import altclip
    model = altclip.AltCLIP("BAAI/AltCLIP")
    images = model.embed_images(["cat.jpg"])          # (1, 768) float32, L2-normalised
    texts = model.embed_texts(["一只猫", "a dog"])      # (2, 768)
    model.similarity(images, texts)                    # softmax over the texts, per image
    altclip.Index("~/Pictures/.altclip/index.db").search("海边的日落")
"""
from ._altclip import __version__
from ._embeddings import Embeddings
from ._errors import ImageError, ModelError
from ._index import Hit, Index
from ._model import AltCLIP

__all__ = ["AltCLIP", "Embeddings", "ImageError", "Hit", "Index", "ModelError", "__version__"]
