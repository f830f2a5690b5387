"""Corpora, tokenizers, vocabulary and token-id arrays. Hands out NumPy arrays only."""

from lmbench.data.pipeline import load_corpus
from lmbench.data.subword import BpeTokenizer, ByteBpeTokenizer, UnigramTokenizer, WordPieceTokenizer
from lmbench.data.tokenizers import CharTokenizer, NltkTokenizer, Tokenizer, WordTokenizer
from lmbench.data.types import CorpusData, Split
from lmbench.data.vocab import Vocabulary

__all__ = [
    "BpeTokenizer",
    "ByteBpeTokenizer",
    "CharTokenizer",
    "CorpusData",
    "NltkTokenizer",
    "Split",
    "Tokenizer",
    "UnigramTokenizer",
    "Vocabulary",
    "WordPieceTokenizer",
    "WordTokenizer",
    "load_corpus",
]
