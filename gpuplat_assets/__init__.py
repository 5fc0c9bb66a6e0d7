"""gpuplat: the substrate of a GPU inference platform as Dagster software-defined assets.

`dagster ... -m gpuplat_assets` loads `defs`, the code location (gpuplat_assets/definitions.py).
"""

from .definitions import defs

__all__ = ["defs"]
