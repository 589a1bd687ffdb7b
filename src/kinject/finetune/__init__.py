"""Continual knowledge injection: corpus, LoRA trainer, EWC, replay, registry, gate, jobs."""
