"""Retrieval metrics (:mod:`.metrics`) and figures (:mod:`.figures`): plain NumPy/PyTorch and matplotlib."""
