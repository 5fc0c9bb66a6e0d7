"""GPU node preflight: verify the NVIDIA GPU Operator's node prerequisites instead of assuming them.

Stdlib only, because it runs inside a short-lived pod on a GPU node (host mounted read-only at
e.g. ``/host``) and in the sandbox's subprocess against a simulated host directory.

- ``parse``: pure parsers for nvidia-smi, /proc/driver/nvidia/version, os-release, mokutil.
- ``collect``: reads those facts from a host root (``collect(host_root) -> HostFacts``).
- ``verdict``: ``preflight(facts) -> Report`` (kernel headers, preinstalled driver, Secure Boot
  on Ada GPUs, GPU present).
- ``python -m gpuplat_probe``: prints the report as one JSON object on stdout.
"""

SCHEMA = "gpuplat.probe.preflight/v1"
