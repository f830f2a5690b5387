"""Corpora, tokenizers, vocabulary and token-id arrays. Hands out NumPy arrays only."""

from lmbench.data.types import CorpusData, Split
from lmbench.data.vocab import Vocabulary

__all__ = ["CorpusData", "Split", "Vocabulary"]
