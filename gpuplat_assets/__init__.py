"""gpuplat: the substrate of a GPU inference platform as Dagster software-defined assets."""

from .definitions import defs

__all__ = ["defs"]
