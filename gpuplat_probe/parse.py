"""Pure parsers: text (or bytes) in, plain values and dataclasses out. No I/O here.

Every parser tolerates empty or foreign input by returning empty/None values, because the
probe must report a missing or broken tool as a fact rather than crash on it.
"""

from __future__ import annotations

import csv
import io
import re
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Optional

# --- GPU architecture and compute capability -------------------------------------------------
#
# Source for both tables: NVIDIA's "CUDA GPU Compute Capability" table,
# https://developer.nvidia.com/cuda-gpus (and the CUDA C++ Programming Guide, "Compute
# Capabilities"). The architecture matters because the Secure Boot rule is about Ada Lovelace
# GPUs (compute capability 8.9), and `nvidia-smi -q -x` prints no compute capability at all
# (the real H100 capture has none), so it has to be derived.

ADA = "Ada Lovelace"

# Keyed by compute capability "major.minor"; majors 10-12 are all Blackwell (10.0 B200/GB200,
# 10.3 B300, 11.0 Jetson Thor, 12.0 RTX PRO 6000 / GeForce RTX 50).
_ARCH_BY_CC = {
    "7.0": "Volta",
    "7.2": "Volta",  # Jetson AGX Xavier
    "7.5": "Turing",
    "8.0": "Ampere",
    "8.6": "Ampere",
    "8.7": "Ampere",  # Jetson Orin
    "8.9": ADA,
    "9.0": "Hopper",
}
_BLACKWELL_MAJORS = {"10", "11", "12"}

# Name -> compute capability for common datacenter GPUs, used only when nvidia-smi gives none.
# Order matters: longer/more specific names first, and every pattern is bounded so that "A10"
# does not match "A100" and "L4" does not match "L40S".
_CC_BY_NAME: list[tuple[str, str]] = [
    (r"RTX\s*(?:PRO\s*)?\d{4}\s*(?:SFF\s*)?Ada", "8.9"),  # RTX 4000 (SFF) Ada, RTX 6000 Ada Generation
    (r"GH200", "9.0"),
    (r"GB200", "10.0"),
    (r"B200", "10.0"),
    (r"H200", "9.0"),
    (r"H100", "9.0"),
    (r"H800", "9.0"),
    (r"H20", "9.0"),
    (r"L40S", "8.9"),
    (r"L40", "8.9"),
    (r"L4", "8.9"),
    (r"A100", "8.0"),
    (r"A800", "8.0"),
    (r"A30", "8.0"),
    (r"A40", "8.6"),
    (r"A10G", "8.6"),
    (r"A10", "8.6"),
    (r"T4", "7.5"),
    (r"V100", "7.0"),
]
_CC_BY_NAME_RE = [
    (re.compile(rf"(?<![A-Za-z0-9]){pat}(?![A-Za-z0-9])", re.IGNORECASE), cc)
    for pat, cc in _CC_BY_NAME
]


def normalize_compute_capability(value: Optional[str]) -> Optional[str]:
    """'9.0' / ' 9.0 ' / '9' -> '9.0'; 'N/A', '[N/A]', '' -> None."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?\s*", value)
    if not m:
        return None
    return f"{int(m.group(1))}.{int(m.group(2) or 0)}"


def architecture_from_compute_capability(cc: Optional[str]) -> Optional[str]:
    cc = normalize_compute_capability(cc)
    if cc is None:
        return None
    if cc in _ARCH_BY_CC:
        return _ARCH_BY_CC[cc]
    if cc.split(".")[0] in _BLACKWELL_MAJORS:
        return "Blackwell"
    return None


def compute_capability_from_name(name: Optional[str]) -> Optional[str]:
    for rx, cc in _CC_BY_NAME_RE:
        if name and rx.search(name):
            return cc
    return None


def architecture_from_name(name: Optional[str]) -> Optional[str]:
    return architecture_from_compute_capability(compute_capability_from_name(name))


def normalize_architecture(value: Optional[str]) -> Optional[str]:
    """nvidia-smi's <product_architecture> ('Hopper', 'Ada Lovelace', 'Ada') -> our names."""
    if not value or value.strip().upper() in {"N/A", "UNKNOWN", ""}:
        return None
    v = value.strip()
    if v.lower().startswith("ada"):
        return ADA
    return v


def is_ada(architecture: Optional[str], compute_capability: Optional[str]) -> bool:
    return architecture == ADA or normalize_compute_capability(compute_capability) == "8.9"


# --- GPUs -------------------------------------------------------------------------------------


@dataclass
class Gpu:
    product_name: str
    uuid: Optional[str] = None
    pci_bus_id: Optional[str] = None
    driver_version: Optional[str] = None
    cuda_version: Optional[str] = None
    memory_total_mib: Optional[int] = None
    mig_mode: Optional[str] = None  # "enabled" | "disabled" | None (not supported / N/A)
    ecc_mode: Optional[str] = None  # "enabled" | "disabled" | None
    persistence_mode: Optional[str] = None
    pci_device_id: Optional[str] = None  # "0x2330": the PCI device id, what pci.ids names
    seen_by: str = "nvidia-smi"  # "nvidia-smi" or "pci" (sysfs, when no driver answers)
    compute_capability: Optional[str] = None
    # Where compute_capability came from: "nvidia-smi", "name" (our table) or None.
    compute_capability_source: Optional[str] = None
    architecture: Optional[str] = None
    # Where architecture came from: "nvidia-smi", "compute-capability", "name" or None.
    architecture_source: Optional[str] = None

    @property
    def is_ada(self) -> bool:
        return is_ada(self.architecture, self.compute_capability)


def _mode(value: Optional[str]) -> Optional[str]:
    """'Enabled'/'Disabled' -> lower case; 'N/A', '[N/A]', '' -> None."""
    if value is None:
        return None
    v = value.strip().strip("[]").lower()
    return v if v in {"enabled", "disabled"} else None


def _mib(value: Optional[str]) -> Optional[int]:
    m = re.match(r"\s*(\d+)\s*(?:MiB)?\s*$", value or "")
    return int(m.group(1)) if m else None


def _text(elem: Optional[ET.Element], path: str) -> Optional[str]:
    if elem is None:
        return None
    found = elem.find(path)
    if found is None or found.text is None:
        return None
    t = found.text.strip()
    return None if t in {"", "N/A"} else t


def _derive(gpu: Gpu) -> Gpu:
    """Fill compute capability / architecture that the tool did not print, recording the source."""
    if gpu.compute_capability:
        gpu.compute_capability_source = gpu.compute_capability_source or "nvidia-smi"
    if gpu.architecture:
        gpu.architecture_source = gpu.architecture_source or "nvidia-smi"
    if not gpu.compute_capability:
        cc = compute_capability_from_name(gpu.product_name)
        if cc:
            gpu.compute_capability, gpu.compute_capability_source = cc, "name"
    if not gpu.architecture:
        arch = architecture_from_compute_capability(gpu.compute_capability)
        if arch:
            src = "compute-capability" if gpu.compute_capability_source == "nvidia-smi" else "name"
            gpu.architecture, gpu.architecture_source = arch, src
    return gpu


def _xml_pci_device_id(value: Optional[str]) -> Optional[str]:
    """nvidia-smi prints device and vendor together, device first: '233010DE' -> '0x2330'."""
    m = re.fullmatch(r"(?:0x)?([0-9A-Fa-f]{4})10DE", value or "")
    return f"0x{m.group(1).lower()}" if m else None


def parse_nvidia_smi_xml(text: str) -> list[Gpu]:
    """`nvidia-smi -q -x` -> one Gpu per <gpu>. Empty or malformed input -> [].

    The DOCTYPE names an external DTD; ElementTree (expat) never fetches it.
    """
    if not text or not text.strip():
        return []
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return []
    driver = _text(root, "driver_version")
    cuda = _text(root, "cuda_version")
    gpus = []
    for g in root.findall("gpu"):
        # Newer drivers may print the compute capability; none of the captured ones do.
        cc = None
        for tag in ("compute_cap", "cuda_compute_capability", "compute_capability"):
            cc = normalize_compute_capability(_text(g, tag))
            if cc:
                break
        gpus.append(
            _derive(
                Gpu(
                    product_name=_text(g, "product_name") or "",
                    uuid=_text(g, "uuid"),
                    pci_bus_id=_text(g, "pci/pci_bus_id") or g.get("id"),
                    driver_version=driver,
                    cuda_version=cuda,
                    memory_total_mib=_mib(_text(g, "fb_memory_usage/total")),
                    mig_mode=_mode(_text(g, "mig_mode/current_mig")),
                    ecc_mode=_mode(_text(g, "ecc_mode/current_ecc")),
                    persistence_mode=_mode(_text(g, "persistence_mode")),
                    pci_device_id=_xml_pci_device_id(_text(g, "pci/pci_device_id")),
                    compute_capability=cc,
                    architecture=normalize_architecture(_text(g, "product_architecture")),
                )
            )
        )
    return gpus


def parse_nvidia_smi_query_csv(text: str) -> list[Gpu]:
    """`nvidia-smi --query-gpu=index,name,uuid,... --format=csv` -> one Gpu per data row.

    Headers carry units ("memory.total [MiB]") and values carry them too ("81559 MiB");
    columns are looked up by name so any subset/order of the query fields works.
    """
    rows = list(csv.reader(io.StringIO(text or ""), skipinitialspace=True))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        return []
    header = [re.sub(r"\s*\[.*?\]\s*$", "", h.strip()) for h in rows[0]]
    if "name" not in header:
        return []
    gpus = []
    for row in rows[1:]:
        rec = {h: (row[i].strip() if i < len(row) else None) for i, h in enumerate(header)}
        gpus.append(
            _derive(
                Gpu(
                    product_name=rec.get("name") or "",
                    uuid=rec.get("uuid"),
                    pci_bus_id=rec.get("pci.bus_id"),
                    driver_version=rec.get("driver_version"),
                    memory_total_mib=_mib(rec.get("memory.total")),
                    mig_mode=_mode(rec.get("mig.mode.current")),
                    ecc_mode=_mode(rec.get("ecc.mode.current")),
                    persistence_mode=_mode(rec.get("persistence_mode")),
                    compute_capability=normalize_compute_capability(rec.get("compute_cap")),
                )
            )
        )
    return gpus


# --- GPUs on the PCI bus (no driver needed) --------------------------------------------------
#
# A node that still needs the GPU Operator to install the driver has no nvidia-smi that works,
# yet its GPUs are on the PCI bus: /sys/bus/pci/devices/<addr>/{vendor,device,class}. Names
# below are NVML's for the same device ids (so the name tables above apply); ids from the PCI
# ID database, https://pci-ids.ucw.cz/read/PC/10de (the H100 one matches the real capture's
# <pci_device_id>233010DE</pci_device_id>). An unknown id still counts as a GPU, unnamed.

NVIDIA_PCI_VENDOR = "0x10de"
_NAME_BY_PCI_DEVICE = {
    "0x1eb8": "Tesla T4",
    "0x1db1": "Tesla V100-SXM2-16GB",
    "0x1db5": "Tesla V100-SXM2-32GB",
    "0x20b0": "NVIDIA A100-SXM4-40GB",
    "0x20b2": "NVIDIA A100-SXM4-80GB",
    "0x20b5": "NVIDIA A100 80GB PCIe",
    "0x20f1": "NVIDIA A100-PCIE-40GB",
    "0x20b7": "NVIDIA A30",
    "0x2235": "NVIDIA A40",
    "0x2236": "NVIDIA A10",
    "0x2237": "NVIDIA A10G",
    "0x26b5": "NVIDIA L40",
    "0x26b9": "NVIDIA L40S",
    "0x27b8": "NVIDIA L4",
    "0x27b2": "NVIDIA RTX 4000 Ada Generation",
    "0x27b0": "NVIDIA RTX 4000 SFF Ada Generation",  # Hetzner GEX44
    "0x26b1": "NVIDIA RTX 6000 Ada Generation",
    "0x2330": "NVIDIA H100 80GB HBM3",
    "0x2331": "NVIDIA H100 PCIe",
    "0x2321": "NVIDIA H100 NVL",
    "0x2335": "NVIDIA H200",
    "0x2901": "NVIDIA B200",
}


def gpu_from_pci(address: str, vendor: str, device: str, pci_class: str) -> Optional[Gpu]:
    """sysfs vendor/device/class of one PCI function -> Gpu, or None when it is no NVIDIA GPU.

    Class 0x03xxxx is a display controller (0x0300 VGA, 0x0302 3D); NVIDIA's other functions
    (HDMI audio, USB-C, NVSwitch bridges) are skipped.
    """
    if vendor.strip().lower() != NVIDIA_PCI_VENDOR or not pci_class.strip().lower().startswith("0x03"):
        return None
    dev = device.strip().lower()
    name = _NAME_BY_PCI_DEVICE.get(dev, f"NVIDIA GPU (PCI device {dev}, not in our table)")
    return _derive(Gpu(product_name=name, pci_bus_id=address, pci_device_id=dev, seen_by="pci"))


# --- driver, OS, Secure Boot ------------------------------------------------------------------


@dataclass
class DriverVersion:
    version: Optional[str]
    flavour: Optional[str]  # "open" | "proprietary" | None (nothing recognisable)


# Open:        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build"
# Proprietary: "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 ..."
_NVRM_RE = re.compile(r"^NVRM version:.*?Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)")


def parse_driver_version_file(text: str) -> DriverVersion:
    """/proc/driver/nvidia/version -> version and kernel module flavour."""
    for line in (text or "").splitlines():
        m = _NVRM_RE.match(line.strip())
        if m:
            flavour = "open" if "Open Kernel Module" in line else "proprietary"
            return DriverVersion(m.group(1), flavour)
    return DriverVersion(None, None)


@dataclass
class OsRelease:
    id: Optional[str]
    version_id: Optional[str]
    pretty_name: Optional[str]
    id_like: tuple[str, ...] = ()


def parse_os_release(text: str) -> OsRelease:
    """/etc/os-release (shell-style KEY=value, see os-release(5)) -> id, version, pretty name."""
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, raw = line.split("=", 1)
        try:
            parts = shlex.split(raw)
            values[key.strip()] = parts[0] if parts else ""
        except ValueError:  # unbalanced quote: keep the raw text rather than drop the key
            values[key.strip()] = raw.strip().strip("\"'")
    return OsRelease(
        id=values.get("ID", "").lower() or None,
        version_id=values.get("VERSION_ID") or None,
        pretty_name=values.get("PRETTY_NAME") or None,
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
    )


def parse_mokutil_sb_state(text: str) -> str:
    """`mokutil --sb-state` -> "enabled" | "disabled" | "unknown".

    Besides "SecureBoot enabled/disabled" it may print "EFI variables are not supported on this
    system" or "This system doesn't support Secure Boot"; those tell us nothing -> "unknown".
    """
    m = re.search(r"^\s*SecureBoot\s+(enabled|disabled)\b", text or "", re.M | re.I)
    return m.group(1).lower() if m else "unknown"


def parse_secure_boot_efivar(data: Optional[bytes], has_attributes: bool = True) -> str:
    """Contents of the SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c EFI variable -> state.

    efivarfs files start with the variable's 4-byte attributes, then its data
    (https://docs.kernel.org/filesystems/efivarfs.html); SecureBoot's data is one byte, 1 when
    Secure Boot is on. mokutil --sb-state decides the same way: it reads that variable and
    prints "SecureBoot enabled" when data[0] == 1 (https://github.com/lcp/mokutil, mokutil.c).
    The legacy sysfs interface (/sys/firmware/efi/vars/<name>/data) has no attribute prefix.
    """
    offset = 4 if has_attributes else 0
    if not data or len(data) <= offset:
        return "unknown"
    return "enabled" if data[offset] == 1 else "disabled"


# --- captured command output ------------------------------------------------------------------


@dataclass
class CommandBlock:
    command: str
    output: str
    rc: Optional[int]


_RC_RE = re.compile(r"^(?:### )?rc=(-?\d+)\s*$")


def parse_command_blocks(text: str) -> list[CommandBlock]:
    """Split a capture made of blocks `### <command>`, output lines, `### rc=N`.

    That is the format of the fixtures' host-facts.txt and of the device script's raw.txt.
    A bare `rc=N` line also closes a block (prerequisite-probes.txt has one); a block without
    an rc line gets rc None.
    """
    blocks: list[CommandBlock] = []
    command: Optional[str] = None
    lines: list[str] = []

    def close(rc: Optional[int]) -> None:
        if command is not None:
            blocks.append(CommandBlock(command, "\n".join(lines).strip("\n"), rc))

    for line in (text or "").splitlines():
        rc = _RC_RE.match(line)
        if rc and command is not None:
            close(int(rc.group(1)))
            command, lines = None, []
        elif line.startswith("### "):
            close(None)
            command, lines = line[4:].strip(), []
        elif command is not None:
            lines.append(line)
    close(None)
    return blocks
