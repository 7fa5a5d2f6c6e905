"""Neural-network layers of the engine."""

from .ttt_layer import TTTLayer

__all__ = ["TTTLayer"]
