"""Model families. One module per family; each honours the contract in `base.py`."""
