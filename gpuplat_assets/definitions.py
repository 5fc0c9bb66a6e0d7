"""The code location: assets, checks, jobs, sensors, schedules and resources in one place.

It sits above everything else: `substrate` (the pieces and the engine) and `sensors` (the reactions)
never import it.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from resources import GpuplatResource
from sensors.dead_runs import dead_runs_sensor
from sensors.drift import drift_sensor
from sensors.environments import environments_sensor
from sensors.scale_to_zero import scale_to_zero_guard
from sensors.schedules import drift_checks_schedule
from substrate.jobs import drift_checks_job, substrate_job
from substrate.partitions import sync_on_load

from .assets import ASSETS, CHECKS
from .cli import install_excepthook
from .shutdown import freeze_at_exit

defs = Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[substrate_job, drift_checks_job],
    # environments: every 30 s; drift: every GPUPLAT_DRIFT_INTERVAL_S (60 s); guard and dead runs: every
    # 60 s; checks: every 30 minutes.
    sensors=[environments_sensor, drift_sensor, scale_to_zero_guard, dead_runs_sensor],
    schedules=[drift_checks_schedule],
    resources={"gpuplat": GpuplatResource()},
    executor=in_process_executor,
)

# The CLI checks `--partition` against the instance right after loading this module: a new
# environment folder becomes a partition first (best effort; the environments sensor does it otherwise),
# and a name that is no environment is said in one line.
sync_on_load()
install_excepthook()
freeze_at_exit()
