"""python -m gpuplat_probe [--host-root DIR] [--nvidia-smi PATH] [--json]

Prints the preflight report as one JSON object on one line of stdout, because the consumer reads
it from the pod's log. Exit code 0 even when a verdict fails (a failed verdict is data, the pod
did its job); non-zero only when the probe itself broke, with an {"error": ...} object instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from gpuplat_probe import SCHEMA
from gpuplat_probe.collect import NVIDIA_SMI_ENV, collect
from gpuplat_probe.verdict import preflight

EXIT_INTERNAL_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpuplat_probe", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--host-root",
        default=os.environ.get("GPUPLAT_HOST_ROOT", "/"),
        help="where the host's / is visible: / on the node, e.g. /host in a pod (default: /)",
    )
    ap.add_argument(
        "--nvidia-smi",
        default=None,
        help=f"nvidia-smi binary to run instead of searching for one (env {NVIDIA_SMI_ENV})",
    )
    ap.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON (the only format; accepted so callers can be explicit)",
    )
    args = ap.parse_args(argv)
    try:
        report = preflight(collect(args.host_root, nvidia_smi=args.nvidia_smi))
        out = report.to_dict()
    except Exception as exc:  # noqa: BLE001 - reported as data and a non-zero exit, not hidden
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"schema": SCHEMA, "ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return EXIT_INTERNAL_ERROR
    print(json.dumps(out, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
