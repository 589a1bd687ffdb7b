"""Kafka plumbing: topics, client factories, the embedded Tansu broker, workers."""
