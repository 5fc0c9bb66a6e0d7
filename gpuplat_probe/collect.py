"""Gather raw facts from a host, given its root directory.

`host_root` is `/` on the node itself, the read-only host mount (e.g. `/host`) inside the preflight
pod, or a directory built from a simulated host profile in the sandbox. Every path is read under
that root; a missing file or tool is recorded as a fact ("absent"), never raised.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Optional

from gpuplat_probe import parse

# Captured tool output a simulated host (or an operator) can place under the root, because a
# binary found under a foreign root usually cannot run here (its libraries are the host's).
CAPTURE_DIR = "/gpuplat-probe"
NVIDIA_SMI_ENV = "GPUPLAT_NVIDIA_SMI"
NVIDIA_SMI_CANDIDATES = ("/usr/bin/nvidia-smi", "/usr/local/nvidia/bin/nvidia-smi")
TOOL_TIMEOUT_S = 30  # nvidia-smi -q on an 8-GPU node with persistence off can take ~10 s

# The EFI global variable GUID; "SecureBoot" under it is what mokutil --sb-state reads.
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


@dataclass
class HostFacts:
    host_root: str = "/"
    gpus: list[parse.Gpu] = field(default_factory=list)
    nvidia_smi: str = "absent"  # how nvidia-smi output was obtained, or why not
    driver_installed: bool = False
    driver_version: Optional[str] = None
    kernel_module_flavour: Optional[str] = None  # "open" | "proprietary" | None (unknown)
    cuda_version: Optional[str] = None
    # nvidia*.ko files for the running kernel: installed (maybe not loaded) driver modules.
    driver_module_files: list[str] = field(default_factory=list)
    kernel_release: Optional[str] = None
    headers_present: bool = False
    headers_paths_checked: list[str] = field(default_factory=list)
    headers_found: list[str] = field(default_factory=list)
    os_id: Optional[str] = None
    os_version_id: Optional[str] = None
    os_pretty_name: Optional[str] = None
    os_id_like: list[str] = field(default_factory=list)
    uefi: bool = False
    secure_boot: str = "unknown"  # "enabled" | "disabled" | "unknown"
    secure_boot_source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class HostFS:
    """Paths of the host resolved under its root, symlinks included.

    Absolute symlinks on the host (/lib/modules/<r>/build -> /usr/src/linux-headers-<r>) point
    at the host's /, so they are re-rooted here instead of being followed in our own filesystem.
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root or "/")

    @property
    def is_local(self) -> bool:
        return self.root == "/"

    def path(self, host_path: str, max_links: int = 40) -> Optional[str]:
        parts = deque(p for p in host_path.split("/") if p)
        cur, links = "/", 0
        while parts:
            comp = parts.popleft()
            if comp in (".", ""):
                continue
            if comp == "..":
                cur = posixpath.dirname(cur)
                continue
            nxt = posixpath.join(cur, comp)
            real = os.path.join(self.root, nxt.lstrip("/"))
            if os.path.islink(real):
                links += 1
                if links > max_links:
                    return None
                target = os.readlink(real)
                if target.startswith("/"):
                    cur = "/"
                parts.extendleft(reversed([p for p in target.split("/") if p]))
                continue
            cur = nxt
        return os.path.join(self.root, cur.lstrip("/"))

    def read_text(self, host_path: str) -> Optional[str]:
        data = self.read_bytes(host_path)
        return None if data is None else data.decode("utf-8", "replace")

    def read_bytes(self, host_path: str) -> Optional[bytes]:
        p = self.path(host_path)
        try:
            with open(p, "rb") as f:  # type: ignore[arg-type]
                return f.read()
        except (OSError, TypeError):
            return None

    def isdir(self, host_path: str) -> bool:
        p = self.path(host_path)
        return bool(p) and os.path.isdir(p)

    def isfile(self, host_path: str) -> bool:
        p = self.path(host_path)
        return bool(p) and os.path.isfile(p)

    def listdir(self, host_path: str) -> list[str]:
        p = self.path(host_path)
        try:
            return sorted(os.listdir(p)) if p else []
        except OSError:
            return []


def run_tool(argv: list[str], timeout: float = TOOL_TIMEOUT_S) -> tuple[str, Optional[str]]:
    """Run a tool -> (status, stdout). status: "ok", "absent", "timeout" or "failed: ..."."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
    except FileNotFoundError:
        return "absent", None
    except subprocess.TimeoutExpired:
        return f"timeout after {timeout:g}s", None
    except OSError as exc:  # not executable, wrong architecture, missing loader...
        return f"failed: {exc}", None
    if proc.returncode != 0:
        first = (proc.stdout.strip() or proc.stderr.strip()).splitlines()[:1]
        return f"failed: rc={proc.returncode} {first[0] if first else ''}".rstrip(), proc.stdout
    return "ok", proc.stdout


def _nvidia_smi_xml(fs: HostFS, explicit: Optional[str]) -> tuple[Optional[str], str]:
    """`nvidia-smi -q -x` text and how it was obtained (or why there is none)."""
    explicit = explicit or os.environ.get(NVIDIA_SMI_ENV) or None
    candidates: list[str] = []
    if explicit:
        candidates.append(explicit)
    elif fs.is_local:
        found = shutil.which("nvidia-smi")
        candidates += [found] if found else []
        candidates += [c for c in NVIDIA_SMI_CANDIDATES if os.path.isfile(c)]
    else:
        captured = f"{CAPTURE_DIR}/nvidia-smi-q.xml"
        text = fs.read_text(captured)
        if text is not None:
            return text, f"captured {captured}"
        for c in NVIDIA_SMI_CANDIDATES:
            p = fs.path(c)
            if p and os.path.isfile(p):
                candidates.append(p)
    if not candidates:
        return None, "absent"
    status, out = run_tool([candidates[0], "-q", "-x"])
    if status == "ok":
        return out, f"ran {candidates[0]}"
    return None, f"{status} ({candidates[0]})"


def _kernel_release(fs: HostFS) -> str:
    # A container shares the host's kernel, so uname is right in the pod too; the file is for
    # simulated hosts, whose kernel is not ours.
    if not fs.is_local:
        text = fs.read_text("/proc/sys/kernel/osrelease")
        if text and text.strip():
            return text.strip()
    return os.uname().release


def _pci_gpus(fs: HostFS) -> list[parse.Gpu]:
    gpus = []
    for addr in fs.listdir("/sys/bus/pci/devices"):
        base = f"/sys/bus/pci/devices/{addr}"
        vendor = fs.read_text(f"{base}/vendor") or ""
        if vendor.strip().lower() != parse.NVIDIA_PCI_VENDOR:
            continue
        gpu = parse.gpu_from_pci(
            addr, vendor, fs.read_text(f"{base}/device") or "", fs.read_text(f"{base}/class") or ""
        )
        if gpu:
            gpus.append(gpu)
    return gpus


def _driver_module_files(fs: HostFS, release: str) -> list[str]:
    base = fs.path(f"/lib/modules/{release}")
    found = []
    if base and os.path.isdir(base):
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.split(".ko")[0] == "nvidia" and ".ko" in name:
                    rel = os.path.relpath(os.path.join(dirpath, name), base)
                    found.append(f"/lib/modules/{release}/{rel}")
    return sorted(found)


def _secure_boot(fs: HostFS) -> tuple[bool, str, str]:
    """(uefi, state, source)."""
    if not fs.isdir("/sys/firmware/efi"):
        # No EFI runtime: booted by legacy BIOS (no Secure Boot possible) or sysfs not visible.
        return False, "unknown", "no /sys/firmware/efi: no UEFI, or sysfs not visible"
    data = fs.read_bytes(f"/sys/firmware/efi/efivars/{SECURE_BOOT_VAR}")
    state = parse.parse_secure_boot_efivar(data)
    if state != "unknown":
        return True, state, f"efivar /sys/firmware/efi/efivars/{SECURE_BOOT_VAR}"
    legacy = f"/sys/firmware/efi/vars/{SECURE_BOOT_VAR}/data"
    state = parse.parse_secure_boot_efivar(fs.read_bytes(legacy), has_attributes=False)
    if state != "unknown":
        return True, state, f"efivar {legacy}"
    if fs.is_local:
        status, out = run_tool(["mokutil", "--sb-state"])
        state = parse.parse_mokutil_sb_state(out or "")
        if state != "unknown":
            return True, state, "mokutil --sb-state"
        mokutil = f"mokutil {status}"
    else:
        captured = f"{CAPTURE_DIR}/mokutil-sb-state.txt"
        state = parse.parse_mokutil_sb_state(fs.read_text(captured) or "")
        if state != "unknown":
            return True, state, f"captured {captured}"
        mokutil = "no captured mokutil output"
    if fs.listdir("/sys/firmware/efi/efivars"):
        # efivarfs is mounted and lists variables, but firmware defines no SecureBoot variable:
        # per the UEFI spec that firmware does not implement Secure Boot (mokutil: "This system
        # doesn't support Secure Boot").
        return True, "disabled", "efivarfs mounted without a SecureBoot variable"
    return True, "unknown", f"UEFI, but SecureBoot variable unreadable (efivarfs empty; {mokutil})"


def collect(host_root: str = "/", nvidia_smi: Optional[str] = None) -> HostFacts:
    fs = HostFS(host_root)
    facts = HostFacts(host_root=fs.root)

    xml, facts.nvidia_smi = _nvidia_smi_xml(fs, nvidia_smi)
    facts.gpus = parse.parse_nvidia_smi_xml(xml or "")
    if not facts.gpus:
        facts.gpus = _pci_gpus(fs)

    proc = parse.parse_driver_version_file(fs.read_text("/proc/driver/nvidia/version") or "")
    sys_version = (fs.read_text("/sys/module/nvidia/version") or "").strip() or None
    smi_driver = next((g.driver_version for g in facts.gpus if g.driver_version), None)
    facts.driver_version = proc.version or sys_version or smi_driver
    facts.driver_installed = facts.driver_version is not None  # loaded: the kernel or NVML says so
    facts.kernel_module_flavour = proc.flavour
    facts.cuda_version = next((g.cuda_version for g in facts.gpus if g.cuda_version), None)

    release = _kernel_release(fs)
    facts.kernel_release = release
    facts.driver_module_files = _driver_module_files(fs, release)
    # build -> headers on Debian/Ubuntu (/usr/src/linux-headers-*) and RHEL (/usr/src/kernels/*);
    # the last is where kernel-devel installs them.
    facts.headers_paths_checked = [
        f"/lib/modules/{release}/build",
        f"/usr/src/linux-headers-{release}",
        f"/usr/src/kernels/{release}",
    ]
    facts.headers_found = [p for p in facts.headers_paths_checked if fs.isdir(p)]
    facts.headers_present = bool(facts.headers_found)

    osr = parse.parse_os_release(
        fs.read_text("/etc/os-release") or fs.read_text("/usr/lib/os-release") or ""
    )
    facts.os_id, facts.os_version_id = osr.id, osr.version_id
    facts.os_pretty_name, facts.os_id_like = osr.pretty_name, list(osr.id_like)

    facts.uefi, facts.secure_boot, facts.secure_boot_source = _secure_boot(fs)
    return facts
