"""The plain values the edges build requests from and render, re-exported from where the
core defines them, so that api/ and cli/ take them from the facade: a generation's decoding
(Sampling), a search's filters (SearchFilters), the answer routes (check_route), the topic
names (Topics), a dead letter (DeadLetter; find_dead_letter picks one by id), a fine-tuning
job (JobRecord), a SQL source (SqlSource), the code blocks of a chunk's text
(split_code) and what an adapter archive travels with over
HTTP (MEDIA_TYPE, SHA_HEADER).

Each module named here is light (no model, no broker client at import time)."""

from kinject.finetune.archive import MEDIA_TYPE
from kinject.finetune.fetch import SHA_HEADER
from kinject.finetune.job_store import JobRecord
from kinject.index.filters import SearchFilters
from kinject.ingest.codeblocks import split_code
from kinject.rag.generate import Sampling
from kinject.rag.routes import check_route
from kinject.stream.dlq import DeadLetter, find_dead_letter
from kinject.stream.sql_source import SqlSource
from kinject.stream.topics import Topics

__all__ = ["MEDIA_TYPE", "SHA_HEADER", "DeadLetter", "JobRecord", "Sampling", "SearchFilters",
           "SqlSource", "Topics", "check_route", "find_dead_letter", "split_code"]
