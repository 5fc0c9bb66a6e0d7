"""The substrate's domain: each piece's desired, observe, plan and apply steps and its checks, the
pause, the lease, the history, and `reconcile`, which runs those steps for one asset. Speaks to the
outside world only through resources/; the Dagster definitions that use it live in gpuplat_assets/."""
