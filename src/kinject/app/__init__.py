"""The facade (``Kinject``, also ``KinjectService``) and the parts it is composed of."""

from kinject.app.facade import JOBS_STOP_WAIT_S, Kinject, KinjectService

__all__ = ["JOBS_STOP_WAIT_S", "Kinject", "KinjectService"]
