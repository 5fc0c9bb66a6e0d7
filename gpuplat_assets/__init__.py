"""gpuplat: the substrate of a GPU inference platform as Dagster software-defined assets."""

from .cli_guard import announce

# Before the asset graph loads (and Dagster warns about it): a broken environment named on the
# command line gets its one clear line first.
announce()

from .definitions import defs  # noqa: E402

__all__ = ["defs"]
