"""The data directory is private to the user who runs kinject: 0700, its files 0600.

It holds the docstore (every ingested text), the outbox (records not yet delivered), API key
hashes, adapters and logs. Called at the edges (the CLI), before anything is created: the
process's umask becomes 077, so every file and folder kinject creates afterwards (SQLite's
journals included) is readable by its owner only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077


def secure_data_dir(path: Path) -> None:
    """Make files created from now on private, and create ``path`` 0700 if it is missing.

    An existing directory is left as it is (its owner chose its mode), with a warning when
    others may read it.
    """
    os.umask(PRIVATE_UMASK)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        log.warning("the data directory %s has mode %o: other users may read what kinject "
                    "stores there (chmod 700 %s)", path, mode, path)
