"""The common trainer: fits every family and evaluates all of them the same way."""
