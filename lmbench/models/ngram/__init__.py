"""The n-gram family: count-based language models (modified Kneser-Ney by default)."""

from lmbench.models.ngram.model import NGramLM

__all__ = ["NGramLM"]
