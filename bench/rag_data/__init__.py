"""Data of the RAG quality bench: relation families in English and Chinese, split dev/test.

Roles live in separate modules: ``families`` (the list and the fixed split), ``entities``
(invented names and values), ``passages`` (how facts are written), ``questions`` (how users ask),
``dataset`` (building a seeded set, and scoring an answer).
"""
