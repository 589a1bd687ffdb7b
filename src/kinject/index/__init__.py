"""Indexing: text and image embedders, FAISS and BM25 indexes, the docstore, hybrid search.

Nothing heavy is imported here; import the submodule you need (``kinject.index.embedders``).
"""
