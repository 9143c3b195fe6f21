"""U-lorry benchmark: is a uranium block hidden in a lorry's cargo? Re-exports ``data``'s names, as TomOpt."""

from .data import ULorryPassiveGenerator

__all__ = ["ULorryPassiveGenerator"]
