"""preflight(facts) -> Report: what the GPU Operator needs from this node, and whether it has it.

The rules come from the substrate contract (shared/DESIGN.md, `gpu_stack: operator`): node
prerequisites are kernel headers for the running kernel (the operator's driver container
compiles the driver against them) and Secure Boot off on Ada GPUs; a driver already on the host
means the operator's driver component must be off (`driver.enabled=false`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from gpuplat_probe import SCHEMA
from gpuplat_probe.collect import HostFacts

PASS, FAIL, NOTE = "pass", "fail", "note"

_DEB_FAMILY = {"ubuntu", "debian"}
_RPM_FAMILY = {"rhel", "rocky", "almalinux", "fedora", "centos", "ol"}


@dataclass
class Verdict:
    id: str
    status: str  # pass | fail | note
    message: str
    remedy: str = ""
    observed: dict = field(default_factory=dict)


@dataclass
class Report:
    facts: HostFacts
    verdicts: list[Verdict]
    # Helm value `driver.enabled` the GPU Operator needs on this node; None when no value works
    # yet (no driver and nothing to build one with).
    operator_driver_enabled: Optional[bool]

    @property
    def ok(self) -> bool:
        return not any(v.status == FAIL for v in self.verdicts)

    def verdict(self, verdict_id: str) -> Optional[Verdict]:
        return next((v for v in self.verdicts if v.id == verdict_id), None)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "operator_driver_enabled": self.operator_driver_enabled,
            "facts": self.facts.to_dict(),
            "verdicts": [asdict(v) for v in self.verdicts],
        }


def headers_package(os_id: Optional[str], os_id_like: list[str], release: str) -> str:
    """The package that provides headers for `release` on this distribution."""
    family = {os_id or ""} | set(os_id_like or [])
    if family & _DEB_FAMILY:
        return f"linux-headers-{release}"
    if family & _RPM_FAMILY:
        return f"kernel-devel-{release}"
    return f"linux-headers-{release} (Debian/Ubuntu) or kernel-devel-{release} (RHEL family)"


def _describe(g) -> str:
    arch = g.architecture or "unknown architecture"
    cc = f"compute capability {g.compute_capability or 'unknown'}"
    return f"{g.product_name} ({arch}, {cc}, MIG {g.mig_mode or 'n/a'}, ECC {g.ecc_mode or 'n/a'})"


def _gpu_present(f: HostFacts) -> Verdict:
    if not f.gpus:
        return Verdict(
            "gpu-present",
            FAIL,
            f"no NVIDIA GPU seen: nvidia-smi {f.nvidia_smi}, and no NVIDIA display controller "
            "under /sys/bus/pci/devices",
            "run the preflight on a GPU node; check the GPU is attached (`lspci -d 10de:`)",
            {"nvidia_smi": f.nvidia_smi},
        )
    names: dict[str, int] = {}
    for g in f.gpus:
        names[_describe(g)] = names.get(_describe(g), 0) + 1
    listing = "; ".join(f"{n} x {d}" for d, n in names.items())
    message = f"{listing} (seen by {f.gpus[0].seen_by})"
    return Verdict("gpu-present", PASS, message, "", {"count": len(f.gpus)})


def _driver(f: HostFacts) -> tuple[Verdict, Optional[bool]]:
    observed = {
        "driver_installed": f.driver_installed,
        "driver_version": f.driver_version,
        "kernel_release": f.kernel_release,
        "headers_present": f.headers_present,
    }
    if f.driver_installed:
        flavour = {"open": "open kernel module", "proprietary": "proprietary kernel module"}.get(
            f.kernel_module_flavour or "", "kernel module flavour unknown"
        )
        cuda = f", CUDA {f.cuda_version}" if f.cuda_version else ""
        headers = (
            ""
            if f.headers_present
            else f"; it could not build one anyway: no kernel headers for {f.kernel_release}"
        )
        return (
            Verdict(
                "driver",
                PASS,
                f"NVIDIA driver {f.driver_version} ({flavour}{cuda}) is preinstalled on the host: "
                "the GPU Operator must not install its own, run it with its driver component "
                f"disabled (driver.enabled=false){headers}",
                "set `driver.enabled: false` in the gpu-operator Helm values",
                observed,
            ),
            False,
        )
    if f.headers_present:
        return (
            Verdict(
                "driver",
                PASS,
                f"no NVIDIA driver on the host; kernel headers for {f.kernel_release} present "
                f"({', '.join(f.headers_found)}): the GPU Operator can build its driver "
                "(driver.enabled=true)",
                "",
                observed,
            ),
            True,
        )
    pkg = headers_package(f.os_id, f.os_id_like, f.kernel_release or "$(uname -r)")
    return (
        Verdict(
            "driver",
            FAIL,
            f"no NVIDIA driver on the host and no kernel headers for the running kernel "
            f"{f.kernel_release} (checked {', '.join(f.headers_paths_checked)}): the GPU "
            "Operator's driver container cannot compile the driver",
            f"install {pkg} on the node, or preinstall the NVIDIA driver and run the GPU "
            "Operator with driver.enabled=false",
            observed,
        ),
        None,
    )


def _secure_boot(f: HostFacts) -> Verdict:
    observed = {"secure_boot": f.secure_boot, "source": f.secure_boot_source, "uefi": f.uefi}
    state = f"Secure Boot {f.secure_boot} ({f.secure_boot_source})"
    if not f.gpus:
        return Verdict("secure-boot", NOTE, f"{state}; not evaluated: no GPU seen", "", observed)
    ada = [g for g in f.gpus if g.is_ada]
    unknown = [g for g in f.gpus if not g.is_ada and not g.architecture and not g.compute_capability]
    disable = (
        "disable Secure Boot in the firmware/BIOS (on a cloud VM: the instance's Secure Boot / "
        "shielded VM setting), or use signed precompiled driver modules"
    )
    if ada and f.secure_boot == "enabled":
        return Verdict(
            "secure-boot",
            FAIL,
            f"{state} on a host with an Ada Lovelace GPU ({ada[0].product_name}, compute "
            "capability 8.9): unsigned NVIDIA kernel modules will not load",
            disable,
            observed,
        )
    if ada and f.secure_boot == "unknown":
        return Verdict(
            "secure-boot",
            NOTE,
            f"Secure Boot could not be verified ({f.secure_boot_source}) on a host with an Ada "
            f"Lovelace GPU ({ada[0].product_name}); it must be off for the driver to load",
            "check `mokutil --sb-state` on the node, or the firmware/BIOS (cloud VM: the Secure "
            f"Boot / shielded VM setting), and if it is on: {disable}",
            observed,
        )
    if unknown and f.secure_boot != "disabled":
        return Verdict(
            "secure-boot",
            NOTE,
            f"{state}; could not tell whether {unknown[0].product_name} is an Ada GPU, on which "
            "Secure Boot must be off",
            "check the GPU model (`nvidia-smi -L` / `lspci -d 10de:`) and `mokutil --sb-state`",
            observed,
        )
    archs = sorted({g.architecture or "unknown" for g in f.gpus})
    if ada:
        message = f"{state} on an Ada Lovelace GPU: as required"
        return Verdict("secure-boot", PASS, message, "", observed)
    note = " (note: could not be verified; not needed here)" if f.secure_boot == "unknown" else ""
    return Verdict(
        "secure-boot",
        PASS,
        f"{state}{note}; the Ada Secure Boot rule does not apply to {', '.join(archs)}",
        "",
        observed,
    )


def _module_not_loaded(f: HostFacts) -> Optional[Verdict]:
    if f.driver_installed or not f.driver_module_files:
        return None
    return Verdict(
        "driver-module-not-loaded",
        NOTE,
        f"NVIDIA kernel modules are installed for {f.kernel_release} but not loaded "
        f"({', '.join(f.driver_module_files[:3])})",
        "load them (`modprobe nvidia`) and run the GPU Operator with driver.enabled=false, or "
        "remove the host driver so the operator's own driver does not conflict with it",
        {"driver_module_files": f.driver_module_files},
    )


def preflight(facts: HostFacts) -> Report:
    driver, operator_driver_enabled = _driver(facts)
    verdicts = [_gpu_present(facts), driver, _secure_boot(facts)]
    extra = _module_not_loaded(facts)
    if extra:
        verdicts.append(extra)
    return Report(facts, verdicts, operator_driver_enabled)
