"""What a Kubernetes deployment of gpuplat adds to Dagster: the run launcher with trust zones."""
