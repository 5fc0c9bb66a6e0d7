"""gpuplat_probe parsers against the real H100 capture in tests/fixtures, then end to end.

The capture (a measurement of a real H100 host, copied with its README) lists what a correct
preflight concludes; each fact is asserted here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuplat_probe import parse
from gpuplat_probe.collect import collect
from gpuplat_probe.verdict import preflight

REPO_ROOT = Path(__file__).resolve().parents[2]
H100 = REPO_ROOT / "tests" / "fixtures" / "gpu-hosts" / "h100-ubuntu2404"


def capture(name: str) -> str:
    return (H100 / name).read_text()


def host_facts_blocks() -> dict[str, parse.CommandBlock]:
    return {b.command: b for b in parse.parse_command_blocks(capture("host-facts.txt"))}


def build_h100_root(root: Path) -> Path:
    """A fake host root holding exactly what the capture shows, and nothing it says is absent
    (no /sys/firmware/efi, no /lib/modules/<release>, no headers)."""
    blocks = host_facts_blocks()
    files = {
        "proc/driver/nvidia/version": blocks["cat /proc/driver/nvidia/version"].output + "\n",
        "etc/os-release": blocks["cat /etc/os-release"].output + "\n",
        "proc/sys/kernel/osrelease": blocks["uname -r"].output + "\n",
        "sys/module/nvidia/version": blocks["cat /sys/module/nvidia/version"].output + "\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "gpuplat-probe").mkdir()
    shutil.copyfile(H100 / "nvidia-smi-q.xml", root / "gpuplat-probe" / "nvidia-smi-q.xml")
    return root


# --- parsers on the real capture --------------------------------------------------------------


def test_nvidia_smi_xml_of_the_real_h100():
    (gpu,) = parse.parse_nvidia_smi_xml(capture("nvidia-smi-q.xml"))
    assert gpu.product_name == "NVIDIA H100 80GB HBM3"
    assert gpu.uuid == "GPU-1064856d-1554-249c-f3ce-f4afa7734279"
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert gpu.pci_device_id == "0x2330"
    assert gpu.driver_version == "580.159.04"
    assert gpu.cuda_version == "13.0"
    assert gpu.memory_total_mib == 81559
    assert gpu.mig_mode == "disabled"
    assert gpu.ecc_mode == "enabled"
    assert (gpu.architecture, gpu.architecture_source) == ("Hopper", "nvidia-smi")
    # nvidia-smi -q -x prints no compute capability: it comes from the name table.
    assert (gpu.compute_capability, gpu.compute_capability_source) == ("9.0", "name")
    assert not gpu.is_ada


def test_nvidia_smi_query_csv_of_the_real_h100_agrees_with_the_xml():
    (row,) = parse.parse_nvidia_smi_query_csv(capture("nvidia-smi-query.csv"))
    (xml,) = parse.parse_nvidia_smi_xml(capture("nvidia-smi-q.xml"))
    assert (row.compute_capability, row.compute_capability_source) == ("9.0", "nvidia-smi")
    assert row.architecture == "Hopper"
    for attr in ("product_name", "uuid", "pci_bus_id", "driver_version", "memory_total_mib",
                 "mig_mode", "ecc_mode", "persistence_mode", "compute_capability", "architecture"):
        assert getattr(row, attr) == getattr(xml, attr), attr


def test_driver_version_file_of_the_real_host_is_the_open_kernel_module():
    text = host_facts_blocks()["cat /proc/driver/nvidia/version"].output
    assert parse.parse_driver_version_file(text) == parse.DriverVersion("580.159.04", "open")
    assert host_facts_blocks()["cat /sys/module/nvidia/version"].output == "580.159.04"


def test_os_release_of_the_real_host_is_ubuntu_2404():
    osr = parse.parse_os_release(host_facts_blocks()["cat /etc/os-release"].output)
    assert (osr.id, osr.version_id, osr.pretty_name) == ("ubuntu", "24.04", "Ubuntu 24.04.3 LTS")
    assert osr.id_like == ("debian",)


def test_prerequisite_probes_show_no_headers_no_uefi_and_no_mokutil():
    blocks = {b.command: b for b in parse.parse_command_blocks(capture("prerequisite-probes.txt"))}
    release = host_facts_blocks()["uname -r"].output
    assert release == "6.18.44-fc-v657-gpu"
    headers = blocks["headers-ls"].output
    assert f"/lib/modules/{release}/build': No such file" in headers
    assert f"/usr/src/linux-headers-{release}': No such file" in headers
    assert "No such file" in blocks["efi"].output
    assert blocks["mokutil"].rc == 127
    assert parse.parse_mokutil_sb_state(blocks["mokutil"].output) == "unknown"


def test_command_blocks_keep_command_output_and_rc():
    blocks = parse.parse_command_blocks(capture("host-facts.txt"))
    assert blocks[0] == parse.CommandBlock(
        "uname -a",
        "Linux vm 6.18.44-fc-v657-gpu #1 SMP PREEMPT_DYNAMIC @0 x86_64 x86_64 x86_64 GNU/Linux",
        0,
    )
    by_cmd = {b.command: b for b in blocks}
    assert by_cmd["ls /sys/firmware/efi"].rc == 2
    assert by_cmd["ls /dev | grep -i nvidia"].output.splitlines()[0] == "nvidia0"


# --- parsers on synthetic inputs (formats documented by the tools) ----------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("SecureBoot enabled\n", "enabled", id="mokutil saying enabled means enabled"),
        pytest.param("SecureBoot disabled\nPlatform is in Setup Mode\n", "disabled",
                     id="mokutil saying disabled means disabled"),
        pytest.param("EFI variables are not supported on this system\n", "unknown",
                     id="mokutil on a BIOS host tells nothing"),
        pytest.param("", "unknown", id="no mokutil output tells nothing"),
    ],
)
def test_mokutil_sb_state(text, expected):
    assert parse.parse_mokutil_sb_state(text) == expected


@pytest.mark.parametrize(
    "data, expected",
    [
        pytest.param(b"\x06\x00\x00\x00\x01", "enabled", id="efivar data byte 1 is enabled"),
        pytest.param(b"\x06\x00\x00\x00\x00", "disabled", id="efivar data byte 0 is disabled"),
        pytest.param(b"\x06\x00\x00\x00", "unknown", id="efivar with attributes only is unknown"),
        pytest.param(None, "unknown", id="no efivar is unknown"),
    ],
)
def test_secure_boot_efivar(data, expected):
    assert parse.parse_secure_boot_efivar(data) == expected


def test_driver_version_file_of_the_proprietary_module():
    # The proprietary module's line format (no "Open"), as printed by e.g. the 550 driver.
    text = (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    assert parse.parse_driver_version_file(text) == parse.DriverVersion("550.54.14", "proprietary")
    assert parse.parse_driver_version_file("") == parse.DriverVersion(None, None)


@pytest.mark.parametrize(
    "cc, arch",
    [
        ("7.0", "Volta"), ("7.5", "Turing"), ("8.0", "Ampere"), ("8.6", "Ampere"), ("8.7", "Ampere"),
        ("8.9", "Ada Lovelace"), ("9.0", "Hopper"), ("10.0", "Blackwell"), ("12.0", "Blackwell"),
        ("6.1", None), ("N/A", None),
    ],
)
def test_architecture_from_compute_capability(cc, arch):
    assert parse.architecture_from_compute_capability(cc) == arch


@pytest.mark.parametrize(
    "name, cc, arch",
    [
        pytest.param("NVIDIA L4", "8.9", "Ada Lovelace", id="L4 is Ada"),
        pytest.param("NVIDIA L40S", "8.9", "Ada Lovelace", id="L40S is Ada and not mistaken for L4"),
        pytest.param("NVIDIA RTX 4000 Ada Generation", "8.9", "Ada Lovelace", id="RTX 4000 Ada is Ada"),
        pytest.param("NVIDIA RTX 6000 Ada Generation", "8.9", "Ada Lovelace", id="RTX 6000 Ada is Ada"),
        pytest.param("Tesla T4", "7.5", "Turing", id="T4 is Turing"),
        pytest.param("NVIDIA A100-SXM4-80GB", "8.0", "Ampere", id="A100 is 8.0"),
        pytest.param("NVIDIA A10G", "8.6", "Ampere", id="A10G is 8.6 and not mistaken for A100"),
        pytest.param("NVIDIA A10", "8.6", "Ampere", id="A10 is 8.6"),
        pytest.param("NVIDIA H100 80GB HBM3", "9.0", "Hopper", id="H100 is Hopper"),
        pytest.param("NVIDIA H200", "9.0", "Hopper", id="H200 is Hopper"),
        pytest.param("NVIDIA GeForce GTX 1080", None, None, id="an unlisted GPU stays unknown"),
    ],
)
def test_compute_capability_and_architecture_from_name(name, cc, arch):
    assert parse.compute_capability_from_name(name) == cc
    assert parse.architecture_from_name(name) == arch


def test_pci_function_that_is_no_gpu_is_skipped():
    assert parse.gpu_from_pci("0000:00:07.0", "0x10de", "0x22bc", "0x040300") is None  # HDMI audio
    assert parse.gpu_from_pci("0000:00:04.0", "0x8086", "0x1234", "0x030000") is None
    l4 = parse.gpu_from_pci("0000:00:06.0", "0x10de\n", "0x27b8\n", "0x030200\n")
    assert (l4.product_name, l4.is_ada, l4.seen_by) == ("NVIDIA L4", True, "pci")


# --- end to end on a host root built from the capture -----------------------------------------


def test_collect_and_preflight_on_the_real_h100_host(tmp_path):
    facts = collect(str(build_h100_root(tmp_path)))
    report = preflight(facts)

    (gpu,) = facts.gpus
    assert gpu.product_name == "NVIDIA H100 80GB HBM3"
    assert (gpu.architecture, gpu.compute_capability, gpu.is_ada) == ("Hopper", "9.0", False)
    assert (gpu.mig_mode, gpu.ecc_mode) == ("disabled", "enabled")
    assert facts.nvidia_smi == "captured /gpuplat-probe/nvidia-smi-q.xml"

    assert facts.driver_installed is True
    assert (facts.driver_version, facts.kernel_module_flavour) == ("580.159.04", "open")
    assert facts.cuda_version == "13.0"

    assert facts.kernel_release == "6.18.44-fc-v657-gpu"
    assert facts.headers_present is False
    assert (facts.os_id, facts.os_version_id) == ("ubuntu", "24.04")

    assert (facts.uefi, facts.secure_boot) == (False, "unknown")

    # Consequence: the driver is preinstalled, so the operator's driver component is off; the
    # missing headers do not matter then, and the Ada rule does not apply to Hopper.
    assert report.operator_driver_enabled is False
    driver = report.verdict("driver")
    assert driver.status == "pass" and "driver.enabled=false" in driver.message
    assert "no kernel headers for 6.18.44-fc-v657-gpu" in driver.message
    secure_boot = report.verdict("secure-boot")
    assert secure_boot.status == "pass"
    assert "does not apply to Hopper" in secure_boot.message
    assert report.verdict("gpu-present").status == "pass"
    assert report.ok is True
    json.dumps(report.to_dict())


def test_cli_prints_the_report_of_the_real_h100_host_as_json(tmp_path):
    root = build_h100_root(tmp_path / "host")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("GPUPLAT_NVIDIA_SMI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "gpuplat_probe", "--host-root", str(root), "--json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1  # one line: easy to find in a pod log
    out = json.loads(proc.stdout)
    assert set(out) == {"schema", "ok", "operator_driver_enabled", "facts", "verdicts"}
    assert out["ok"] is True and out["operator_driver_enabled"] is False
    assert out["facts"]["gpus"][0]["product_name"] == "NVIDIA H100 80GB HBM3"
    assert out["facts"]["gpus"][0]["architecture"] == "Hopper"
    assert out["facts"]["kernel_module_flavour"] == "open"
    assert out["facts"]["secure_boot"] == "unknown"
    assert {v["id"]: v["status"] for v in out["verdicts"]} == {
        "gpu-present": "pass", "driver": "pass", "secure-boot": "pass",
    }
