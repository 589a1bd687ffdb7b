"""Continual knowledge injection: corpus, LoRA trainer, EWC, replay, adapter registry, gate, jobs."""
