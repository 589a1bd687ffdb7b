"""kinject: retrieval-augmented knowledge injection.

Heavy libraries (torch, transformers, faiss, open_clip) are imported only inside the
modules that need them, so importing this package and running ``kinject --help`` is instant.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
