"""The facade's former home: ``from kinject.service import KinjectService`` keeps working.
New code imports it from ``kinject.app``."""

from kinject.app import JOBS_STOP_WAIT_S, Kinject, KinjectService
from kinject.app.records import DOCSTORE_FILE, TEXT_INDEX_DIR

__all__ = ["DOCSTORE_FILE", "JOBS_STOP_WAIT_S", "TEXT_INDEX_DIR", "Kinject", "KinjectService"]
