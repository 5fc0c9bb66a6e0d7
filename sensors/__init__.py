"""gpuplat's reactions: what keeps the substrate true between materializations.

- `drift.drift_sensor`: every tick (60 s, `GPUPLAT_DRIFT_INTERVAL_S`), the read-only observe + plan of
  every asset in every environment; new drift requests one run of that asset for that environment
  (`remediation: auto`) or fails its `in_sync` check (`remediation: report`, the default on prod).
- `scale_to_zero.scale_to_zero_guard`: a GPU node idle past the grace period fails gpu_pool's
  `scales_to_zero` check, naming each blocker pod by the cluster autoscaler's rules and the idle cost,
  and requests a gpu_pool rematerialization.
- `schedules.drift_checks_schedule`: every asset check of every environment, every 30 minutes.

All three are level-based (every tick re-observes) and keep in their cursor only what prevents
repeats. `gpuplat_assets.definitions` wires them into the code location.
"""
