"""Evaluation of answers against a question set: metrics, the set's loader, the runner and
its report (``kinject eval``, ``POST /v1/eval``)."""
