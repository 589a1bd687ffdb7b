"""Small text helpers shared by the passage and question generators."""

from __future__ import annotations


def capitalise(text: str, name: str) -> str:
    """Upper-case the first letter, unless the text starts with a lower-case name such as a
    command ("portwick"): only "the ..." is capitalised there."""
    if text.startswith(name) and not name.startswith("the "):
        return text
    return text[0].upper() + text[1:]
