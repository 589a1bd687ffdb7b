"""Adapters that let other frameworks use kinject (LangChain, LlamaIndex)."""
