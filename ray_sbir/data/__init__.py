"""Data formats and datasets: plain Python/NumPy/PyTorch, no Ray."""
