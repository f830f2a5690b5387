"""lmbench: compare n-gram, recurrent and Transformer language models on the same token ids."""

__version__ = "0.1.0"
