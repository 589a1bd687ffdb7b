"""Imported at start-up by the Python processes a test starts with ``held_records`` (see
tests/stream/_held_records.py): the ingest child honours the test's hold keys."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

import _held_records

_held_records.install()

# This file hides any other sitecustomize (a distribution's own): run that one as well.
_here = os.path.dirname(os.path.abspath(__file__))
_others = [p for p in sys.path if os.path.abspath(p or ".") != _here]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _others)
if _spec is not None and _spec.loader is not None:
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
