#!/usr/bin/env bash
# GPU node preflight on a real GPU machine: run gpuplat_probe against / and capture the raw
# facts it decides from, so the report can be checked against (and later become) a fixture.
#
# Assumes: run as root from the repo root (the repo copied to cwd), some Python 3, nothing else
# installed; $OUT is an output folder. Writes:
#   $OUT/preflight.json   the probe's report (one JSON object)
#   $OUT/preflight.err    the probe's stderr (empty unless it broke)
#   $OUT/raw.txt          `### <command>` / output / `### rc=N` blocks, the format of
#                         tests/fixtures/gpu-hosts/*/host-facts.txt (parse_command_blocks reads it)
#   $OUT/nvidia-smi-q.xml `nvidia-smi -q -x`, as a file, to diff against the fixture's
# A missing tool is recorded (rc 127) and never fails the script; only a probe that crashes does.
set -u

OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
RAW="$OUT/raw.txt"
: >"$RAW"

PY="$(command -v python3 || command -v python || true)"
if [ -z "$PY" ]; then
  echo "no python3/python on PATH" >&2
  exit 1
fi

# One block per command; bash -c so pipes and $(...) work and a missing tool is just rc=127.
capture() {
  echo "### $1" >>"$RAW"
  bash -c "$1" >>"$RAW" 2>&1
  echo "### rc=$?" >>"$RAW"
}

capture 'uname -a'
capture 'uname -r'
capture 'cat /etc/os-release'
capture 'cat /proc/driver/nvidia/version'
capture 'cat /sys/module/nvidia/version'
capture 'command -v nvidia-smi mokutil'
capture 'nvidia-smi'
capture 'nvidia-smi --query-gpu=index,name,uuid,driver_version,pci.bus_id,memory.total,mig.mode.current,ecc.mode.current,persistence_mode,compute_cap --format=csv'
capture 'ls /sys/firmware/efi'
capture 'ls /sys/firmware/efi/efivars | grep -i secureboot'
capture 'mokutil --sb-state'
capture 'ls -d /lib/modules/$(uname -r)/build /usr/src/linux-headers-$(uname -r) /usr/src/kernels/$(uname -r)'
capture 'for d in /sys/bus/pci/devices/*; do [ "$(cat $d/vendor)" = 0x10de ] && echo "$(basename $d) $(cat $d/device) $(cat $d/class)"; done; true'
capture 'nvidia-smi -q -x'
nvidia-smi -q -x >"$OUT/nvidia-smi-q.xml" 2>/dev/null || rm -f "$OUT/nvidia-smi-q.xml"

"$PY" -m gpuplat_probe --host-root / --json >"$OUT/preflight.json" 2>"$OUT/preflight.err"
rc=$?
echo "### gpuplat_probe exit code: $rc" >&2
cat "$OUT/preflight.json"
if [ -s "$OUT/preflight.err" ]; then
  echo "--- probe stderr:" >&2
  cat "$OUT/preflight.err" >&2
fi
exit "$rc"
