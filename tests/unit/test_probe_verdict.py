"""Every preflight verdict, on simulated hosts built as directories (collect + preflight)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from gpuplat_probe.collect import SECURE_BOOT_VAR, HostFacts, collect
from gpuplat_probe.parse import Gpu
from gpuplat_probe.verdict import headers_package, preflight

REPO_ROOT = Path(__file__).resolve().parents[2]

UBUNTU = ("ubuntu", "6.8.0-1015-gcp", 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n')
ROCKY = (
    "rocky",
    "5.14.0-427.13.1.el9_4.x86_64",
    'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n',
)
# PCI device ids as sysfs shows them (pci.ids: 27b8 AD104GL [L4], 2330 GH100 [H100 SXM5 80GB]).
L4, H100 = "0x27b8", "0x2330"
OPEN_DRIVER = (
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs)\n"
)


def write(root: Path, rel: str, data: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def make_host(
    root: Path,
    *,
    gpu: Optional[str] = H100,
    driver: bool = False,
    headers: bool = False,
    os_=UBUNTU,
    secure_boot: Optional[str] = None,  # "enabled" | "disabled" | None: no UEFI at all
) -> Path:
    _os_id, release, os_release = os_
    write(root, "etc/os-release", os_release)
    write(root, "proc/sys/kernel/osrelease", release + "\n")
    if gpu:
        dev = "sys/bus/pci/devices/0000:00:06.0"
        write(root, f"{dev}/vendor", "0x10de\n")
        write(root, f"{dev}/device", gpu + "\n")
        write(root, f"{dev}/class", "0x030200\n")
        write(root, "sys/bus/pci/devices/0000:00:07.0/vendor", "0x10de\n")  # its HDMI audio
        write(root, "sys/bus/pci/devices/0000:00:07.0/device", "0x22bc\n")
        write(root, "sys/bus/pci/devices/0000:00:07.0/class", "0x040300\n")
    if driver:
        write(root, "proc/driver/nvidia/version", OPEN_DRIVER)
        write(root, "sys/module/nvidia/version", "580.159.04\n")
    if headers:
        # As packages install them: build is an absolute symlink into the host's /usr/src, so
        # this also checks that symlinks are resolved under the host root, not in ours.
        target = f"usr/src/kernels/{release}" if os_ is ROCKY else f"usr/src/linux-headers-{release}"
        (root / target).mkdir(parents=True)
        (root / f"lib/modules/{release}").mkdir(parents=True)
        (root / f"lib/modules/{release}/build").symlink_to(f"/{target}")
    if secure_boot:
        byte = b"\x01" if secure_boot == "enabled" else b"\x00"
        write(root, f"sys/firmware/efi/efivars/{SECURE_BOOT_VAR}", b"\x06\x00\x00\x00" + byte)
        write(root, "sys/firmware/efi/efivars/BootCurrent-8be4df61-93ca-11d2-aa0d-00e098032b8c",
              b"\x06\x00\x00\x00\x01\x00")
    return root


CASES = [
    pytest.param(
        dict(gpu=H100, driver=True),
        "driver", "pass", "driver.enabled=false", False, True,
        id="a preinstalled driver turns the operator's driver component off",
    ),
    pytest.param(
        dict(gpu=H100, os_=UBUNTU),
        "driver", "fail", "linux-headers-6.8.0-1015-gcp", None, False,
        id="no driver and no headers on Ubuntu fails naming linux-headers for the running kernel",
    ),
    pytest.param(
        dict(gpu=H100, os_=ROCKY),
        "driver", "fail", "kernel-devel-5.14.0-427.13.1.el9_4.x86_64", None, False,
        id="no driver and no headers on Rocky fails naming kernel-devel for the running kernel",
    ),
    pytest.param(
        dict(gpu=H100, headers=True),
        "driver", "pass", "can build its driver", True, True,
        id="no driver with headers present lets the operator build the driver",
    ),
    pytest.param(
        dict(gpu=H100, os_=ROCKY, headers=True),
        "driver", "pass", "/usr/src/kernels/5.14.0-427.13.1.el9_4.x86_64", True, True,
        id="headers from kernel-devel behind an absolute build symlink count as present",
    ),
    pytest.param(
        dict(gpu=L4, headers=True, secure_boot="enabled"),
        "secure-boot", "fail", "unsigned NVIDIA kernel modules will not load", True, False,
        id="an Ada L4 with Secure Boot enabled fails",
    ),
    pytest.param(
        dict(gpu=L4, headers=True, secure_boot="disabled"),
        "secure-boot", "pass", "Secure Boot disabled", True, True,
        id="an Ada L4 with Secure Boot disabled passes",
    ),
    pytest.param(
        dict(gpu=L4, headers=True, secure_boot=None),
        "secure-boot", "note", "could not be verified", True, True,
        id="an Ada L4 whose Secure Boot cannot be read gets a note saying what to check",
    ),
    pytest.param(
        dict(gpu=H100, driver=True, secure_boot=None),
        "secure-boot", "pass", "could not be verified; not needed here", False, True,
        id="unknown Secure Boot on a non-Ada GPU passes with a note",
    ),
    pytest.param(
        dict(gpu=H100, driver=True, secure_boot="enabled"),
        "secure-boot", "pass", "does not apply to Hopper", False, True,
        id="Secure Boot enabled on a Hopper GPU passes because the Ada rule does not apply",
    ),
    pytest.param(
        dict(gpu=None, headers=True),
        "gpu-present", "fail", "no NVIDIA GPU seen", True, False,
        id="no GPU at all fails",
    ),
]


@pytest.mark.parametrize("host, verdict_id, status, text, operator_driver, ok", CASES)
def test_preflight_verdicts(tmp_path, host, verdict_id, status, text, operator_driver, ok):
    report = preflight(collect(str(make_host(tmp_path, **host))))
    v = report.verdict(verdict_id)
    assert v is not None, [x.id for x in report.verdicts]
    assert v.status == status, v
    assert text in f"{v.message} {v.remedy}", v
    if status == "fail":
        assert v.remedy, "a failing verdict says how to fix it"
    assert report.operator_driver_enabled is operator_driver
    assert report.ok is ok, [x for x in report.verdicts if x.status == "fail"]
    json.dumps(report.to_dict())


def test_ada_with_secure_boot_enabled_remedy_is_to_disable_it_or_use_signed_drivers(tmp_path):
    report = preflight(collect(str(make_host(tmp_path, gpu=L4, headers=True, secure_boot="enabled"))))
    remedy = report.verdict("secure-boot").remedy
    assert "disable Secure Boot in the firmware/BIOS" in remedy
    assert "signed precompiled driver" in remedy
    assert report.facts.gpus[0].product_name == "NVIDIA L4"
    assert (report.facts.uefi, report.facts.secure_boot) == (True, "enabled")


@pytest.mark.parametrize(
    "os_id, id_like, expected",
    [
        pytest.param("ubuntu", [], "linux-headers-R", id="Ubuntu installs linux-headers"),
        pytest.param("debian", [], "linux-headers-R", id="Debian installs linux-headers"),
        pytest.param("almalinux", ["rhel", "centos", "fedora"], "kernel-devel-R",
                     id="Alma installs kernel-devel"),
        pytest.param("fedora", [], "kernel-devel-R", id="Fedora installs kernel-devel"),
        pytest.param("centos", ["rhel", "fedora"], "kernel-devel-R", id="CentOS installs kernel-devel"),
        pytest.param("rhel", ["fedora"], "kernel-devel-R", id="RHEL installs kernel-devel"),
        pytest.param(None, [], "linux-headers-R (Debian/Ubuntu) or kernel-devel-R (RHEL family)",
                     id="an unknown OS is told both packages"),
    ],
)
def test_headers_package_per_distribution(os_id, id_like, expected):
    assert headers_package(os_id, id_like, "R") == expected


def test_secure_boot_on_an_ada_gpu_known_only_by_nvidia_smi_compute_capability():
    # The rule keys on compute capability 8.9 even when the name is unknown to our table.
    gpu = Gpu(product_name="NVIDIA Future Ada", compute_capability="8.9",
              compute_capability_source="nvidia-smi")
    facts = HostFacts(gpus=[gpu], driver_installed=True, driver_version="580.159.04",
                      uefi=True, secure_boot="enabled", secure_boot_source="test")
    assert preflight(facts).verdict("secure-boot").status == "fail"


@pytest.mark.parametrize(
    "files, uefi, state",
    [
        pytest.param({}, False, "unknown", id="no /sys/firmware/efi means no UEFI and unknown"),
        pytest.param({"sys/firmware/efi/efivars": None}, True, "unknown",
                     id="UEFI with an empty efivarfs is unknown"),
        pytest.param({"sys/firmware/efi/efivars/BootCurrent-8be4df61-93ca-11d2-aa0d-00e098032b8c":
                      b"\x06\x00\x00\x00\x01\x00"}, True, "disabled",
                     id="UEFI firmware that defines no SecureBoot variable has it off"),
        pytest.param({"sys/firmware/efi/vars/" + SECURE_BOOT_VAR + "/data": b"\x01"}, True, "enabled",
                     id="the legacy sysfs efivar has no attribute bytes"),
        pytest.param({"sys/firmware/efi": None, "gpuplat-probe/mokutil-sb-state.txt":
                      "SecureBoot enabled\n"}, True, "enabled",
                     id="a captured mokutil answer is used when the efivar cannot be read"),
    ],
)
def test_secure_boot_sources(tmp_path, files, uefi, state):
    root = make_host(tmp_path, gpu=L4, headers=True)
    for rel, data in files.items():
        if data is None:  # an empty directory
            (root / rel).mkdir(parents=True)
        else:
            write(root, rel, data)
    facts = collect(str(root))
    assert (facts.uefi, facts.secure_boot) == (uefi, state), facts.secure_boot_source


def test_build_symlink_is_resolved_under_the_host_root(tmp_path):
    release = UBUNTU[1]
    root = make_host(tmp_path / "ok", gpu=H100)
    (root / "opt/headers").mkdir(parents=True)
    (root / f"lib/modules/{release}").mkdir(parents=True)
    (root / f"lib/modules/{release}/build").symlink_to("/opt/headers")
    assert collect(str(root)).headers_found == [f"/lib/modules/{release}/build"]

    # /tmp exists in the filesystem the probe runs in, but not on this host: not present.
    dangling = make_host(tmp_path / "dangling", gpu=H100)
    (dangling / f"lib/modules/{release}").mkdir(parents=True)
    (dangling / f"lib/modules/{release}/build").symlink_to("/tmp")
    assert collect(str(dangling)).headers_present is False


def test_installed_but_unloaded_driver_module_is_a_note(tmp_path):
    root = make_host(tmp_path, gpu=H100, headers=True)
    write(root, "lib/modules/6.8.0-1015-gcp/updates/dkms/nvidia.ko.zst", b"")
    report = preflight(collect(str(root)))
    note = report.verdict("driver-module-not-loaded")
    assert note.status == "note"
    assert "/lib/modules/6.8.0-1015-gcp/updates/dkms/nvidia.ko.zst" in note.message
    assert report.ok is True


def test_cli_exits_zero_when_a_verdict_fails(tmp_path):
    # A failed verdict is data for the consumer, not a crashed probe.
    root = make_host(tmp_path / "host", gpu=None)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("GPUPLAT_NVIDIA_SMI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "gpuplat_probe", "--host-root", str(root)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] is False
    assert {v["id"]: v["status"] for v in out["verdicts"]}["gpu-present"] == "fail"


def test_cli_reports_an_unusable_nvidia_smi_as_a_fact(tmp_path):
    root = make_host(tmp_path / "host", gpu=L4, headers=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "gpuplat_probe", "--host-root", str(root),
         "--nvidia-smi", str(tmp_path / "missing" / "nvidia-smi")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["facts"]["nvidia_smi"].startswith("absent")
    assert out["facts"]["gpus"][0]["seen_by"] == "pci"  # still seen, on the PCI bus


@pytest.mark.parametrize("name", ["NVIDIA RTX 4000 SFF Ada Generation", "NVIDIA RTX 4000 Ada Generation",
                                  "NVIDIA RTX 6000 Ada Generation", "NVIDIA L4", "NVIDIA L40S"])
def test_every_ada_card_the_rule_names_is_recognised_by_name(name):
    from gpuplat_probe.parse import compute_capability_from_name
    assert compute_capability_from_name(name) == "8.9"
