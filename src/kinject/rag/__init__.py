"""Retrieval-augmented answering: retrieve, select, prompt, generate, cite."""
