"""Ingestion: a :class:`~kinject.types.Record` becomes Documents, Chunks and ImageItems.

Stages, one module each, all pure functions (no I/O beyond reading the payload):

- ``envelope``  the Kafka JSON envelope <-> :class:`~kinject.types.Record`
- ``sniff``     guess a payload's kind from magic bytes, file name and content
- ``parsers``   one parser per kind (text, CSV/TSV, JSON, JSONL); ``image`` for pictures
- ``ocr``       OCR backends (RapidOCR, Tesseract), imported only when used
- ``normalise`` Unicode and whitespace normalisation, language detection
- ``chunking``  split documents into retrievable, content-addressed chunks
- ``pipeline``  ``ingest_record``: all of the above for one record

Nothing heavy is imported here, so ``import kinject.ingest`` is instant.
"""
