"""Corpora, tokenizers, vocabulary and token-id arrays. Hands out NumPy arrays only."""

from lmbench.data.pipeline import load_corpus
from lmbench.data.tokenizers import CharTokenizer, NltkTokenizer, Tokenizer, WordTokenizer
from lmbench.data.types import CorpusData, Split
from lmbench.data.vocab import Vocabulary

__all__ = [
    "CharTokenizer",
    "CorpusData",
    "NltkTokenizer",
    "Split",
    "Tokenizer",
    "Vocabulary",
    "WordTokenizer",
    "load_corpus",
]
