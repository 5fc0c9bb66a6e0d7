"""Pre-provisioned non-GKE clusters and the simulated GPU hosts behind their nodes.

Simulation: stands in for a cluster somebody else built (a kubeadm cluster for "bring your own",
a k3s/kubeadm cluster on Hetzner Cloud servers plus a dedicated Hetzner GPU server for the
Hetzner path). Nothing in it is created by gpuplat; gpuplat only gets a kubeconfig.

Each GPU node carries a simulated **host profile** (annotation `sandbox.gpuplat.io/host-profile`,
JSON) describing what a real host would show its driver installer: GPU model, compute
capability, NVIDIA driver (installed or not, version, open or proprietary kernel module), kernel
release and whether its headers are installed, OS, Secure Boot. The simulated GPU Operator and
the simulated kubelet running the preflight probe read it; tests change it through
`PUT /sandbox/kube/{cluster}/host-profile`.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from typing import TYPE_CHECKING

from ..core import ApiError
from ..wire.http import Request, Route
from ..stores.kube import KubeStore, RT_CRD, RT_CSIDRIVER, RT_NODE, RT_STORAGECLASS
from .util import GPU, HOST_PROFILE, crd, ensure_namespace, resolve_cluster, short_hash, write_meta

if TYPE_CHECKING:
    from ..core import SandboxContext as Sandbox

BYO_CLUSTER = "byo-gpu"
HETZNER_CLUSTER = "hetzner-gpu"
DEFAULT_SC_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
SECURE_BOOT_STATES = ("enabled", "disabled", "unknown")

# The real H100 host captured in tests/fixtures/gpu-hosts/h100-ubuntu2404: driver preinstalled
# (open kernel module 580.159.04, CUDA 13.0), no headers for its kernel, no UEFI.
H100_UBUNTU2404 = {
    "gpu": {"model": "NVIDIA H100 80GB HBM3", "count": 1, "computeCapability": "9.0", "architecture": "Hopper",
            "pciDeviceId": "0x2330", "pciBusId": "00000000:00:06.0", "memoryMiB": 81559,
            "uuid": "GPU-1064856d-1554-249c-f3ce-f4afa7734279"},
    "driver": {"installed": True, "version": "580.159.04", "flavour": "open", "cudaVersion": "13.0"},
    "kernel": {"release": "6.18.44-fc-v657-gpu", "headers": False},
    "os": {"id": "ubuntu", "versionId": "24.04", "prettyName": "Ubuntu 24.04.3 LTS", "idLike": "debian",
           "codename": "noble"},
    "secureBoot": "unknown",
}

# Hetzner GEX44: a dedicated (robot) server with an RTX 4000 SFF Ada (AD104GL, PCI 10de:27b0,
# compute capability 8.9), freshly installed: no driver, headers for the running kernel present,
# Secure Boot off.
RTX4000_SFF_ADA_UBUNTU2404 = {
    "gpu": {"model": "NVIDIA RTX 4000 SFF Ada Generation", "count": 1, "computeCapability": "8.9",
            "architecture": "Ada Lovelace", "pciDeviceId": "0x27b0", "pciBusId": "00000000:01:00.0",
            "memoryMiB": 20475, "uuid": "GPU-5f0c3a52-8d7e-4c1b-9a66-2e41b7d09c13"},
    "driver": {"installed": False},
    "kernel": {"release": "6.8.0-57-generic", "headers": True},
    "os": {"id": "ubuntu", "versionId": "24.04", "prettyName": "Ubuntu 24.04.2 LTS", "idLike": "debian",
           "codename": "noble"},
    "secureBoot": "disabled",
}

SNAPSHOT_CRDS = (
    crd("snapshot.storage.k8s.io", "v1", "volumesnapshots", "VolumeSnapshot", True, ("vs",)),
    crd("snapshot.storage.k8s.io", "v1", "volumesnapshotclasses", "VolumeSnapshotClass", False, ("vsclass",),
        status_subresource=False),
    crd("snapshot.storage.k8s.io", "v1", "volumesnapshotcontents", "VolumeSnapshotContent", False, ("vsc",)),
)


def host_profile(node: dict) -> dict | None:
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(HOST_PROFILE)
    if not raw:
        return None
    try:
        prof = json.loads(raw)
    except ValueError:
        return None
    return prof if isinstance(prof, dict) else None


def profile_gpu_count(profile: dict) -> int:
    try:
        return max(int((profile.get("gpu") or {}).get("count", 1)), 0)
    except (TypeError, ValueError):
        return 1


# ---- nodes --------------------------------------------------------------------------------------
def _node(name: str, *, cpu: str, memory: str, labels: dict, provider_id: str | None, ip: str,
          os_image: str, kernel: str, taints: list | None = None, profile: dict | None = None,
          storage: str = "100Gi") -> dict:
    resources = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": storage}
    node = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                              "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                                              "beta.kubernetes.io/arch": "amd64", **labels},
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {},
        "status": {
            "capacity": dict(resources), "allocatable": dict(resources),
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status"},
            ],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "osImage": os_image,
                         "kernelVersion": kernel, "kubeletVersion": "v1.31.6",
                         "kubeProxyVersion": "v1.31.6", "containerRuntimeVersion": "containerd://1.7.27",
                         "bootID": str(uuid.UUID(short_hash(name, "boot", n=32))),
                         "machineID": short_hash(name, "machine", n=32),
                         "systemUUID": str(uuid.UUID(short_hash(name, "system", n=32)))},
        },
    }
    if provider_id:
        node["spec"]["providerID"] = provider_id
    if taints:
        node["spec"]["taints"] = taints
    if profile is not None:
        node["metadata"]["annotations"][HOST_PROFILE] = json.dumps(profile, sort_keys=True)
    return node


def _storage_class(name: str, provisioner: str, default: bool, expand: bool) -> dict:
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
          "provisioner": provisioner, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer",
          "allowVolumeExpansion": expand}
    if default:
        sc["metadata"]["annotations"] = {DEFAULT_SC_ANNOTATION: "true"}
    return sc


def _base_namespaces(kube: KubeStore) -> None:
    for ns in ("default", "kube-system", "kube-public"):
        ensure_namespace(kube, ns)


def _bootstrap_byo(sb: "Sandbox") -> None:
    """A kubeadm cluster on someone's own machines: no cloud provider, so no providerID."""
    kube = sb.kube(BYO_CLUSTER)
    _base_namespaces(kube)
    ubuntu = "Ubuntu 24.04.3 LTS"
    kube.create(RT_NODE, _node(
        "byo-control-plane-1", cpu="4", memory="16Gi", ip="10.20.0.10", provider_id=None, os_image=ubuntu,
        kernel="6.8.0-57-generic",
        labels={"node-role.kubernetes.io/control-plane": "",
                "node.kubernetes.io/exclude-from-external-load-balancers": ""},
        taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]))
    kube.create(RT_NODE, _node("byo-worker-1", cpu="16", memory="64Gi", ip="10.20.0.11", provider_id=None,
                               os_image=ubuntu, kernel="6.8.0-57-generic", labels={}))
    prof = H100_UBUNTU2404
    # No nvidia.com/gpu allocatable: nothing advertises the GPU until a GPU stack runs.
    # Labelled by its owner, as the bring-your-own docs ask: the GPU Operator's own GPU-node label.
    kube.create(RT_NODE, _node("byo-gpu-h100-1", cpu="26", memory="234Gi", ip="10.20.0.21", provider_id=None,
                               os_image=prof["os"]["prettyName"], kernel=prof["kernel"]["release"],
                               labels={"nvidia.com/gpu.present": "true"}, profile=prof, storage="500Gi"))
    kube.create(RT_STORAGECLASS, _storage_class("local-path", "rancher.io/local-path", default=False, expand=False))


def _bootstrap_hetzner(sb: "Sandbox") -> None:
    """Hetzner Cloud servers (hcloud CCM: providerID hcloud://<server id>) plus one dedicated GEX44
    robot server (providerID hrobot://<server number>), as hcloud-cloud-controller-manager labels them."""
    kube = sb.kube(HETZNER_CLUSTER)
    _base_namespaces(kube)
    ubuntu = "Ubuntu 24.04.2 LTS"
    cloud = {"node.kubernetes.io/instance-type": "cpx41", "topology.kubernetes.io/region": "fsn1",
             "topology.kubernetes.io/zone": "fsn1-dc14", "instance.hetzner.cloud/provided-by": "cloud"}
    kube.create(RT_NODE, _node(
        "hz-control-plane-1", cpu="8", memory="16Gi", ip="10.0.1.2", provider_id="hcloud://58213407",
        os_image=ubuntu, kernel="6.8.0-57-generic", storage="240Gi",
        labels={**cloud, "node-role.kubernetes.io/control-plane": ""},
        taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]))
    for i, sid in ((1, "58213411"), (2, "58213419")):
        kube.create(RT_NODE, _node(f"hz-cpx41-{i}", cpu="8", memory="16Gi", ip=f"10.0.1.{2 + i}",
                                   provider_id=f"hcloud://{sid}", os_image=ubuntu, kernel="6.8.0-57-generic",
                                   storage="240Gi", labels=cloud))
    prof = RTX4000_SFF_ADA_UBUNTU2404
    kube.create(RT_NODE, _node(
        "hz-gex44-1", cpu="20", memory="64Gi", ip="10.0.2.2", provider_id="hrobot://2519841",
        os_image=prof["os"]["prettyName"], kernel=prof["kernel"]["release"], storage="1788Gi", profile=prof,
        labels={"node.kubernetes.io/instance-type": "GEX44", "topology.kubernetes.io/region": "fsn1",
                "topology.kubernetes.io/zone": "fsn1-dc18", "instance.hetzner.cloud/provided-by": "robot",
                "instance.hetzner.cloud/is-root-server": "true"}))
    kube.create(RT_CSIDRIVER, {"metadata": {"name": "csi.hetzner.cloud"},
                               "spec": {"attachRequired": True, "podInfoOnMount": True,
                                        "volumeLifecycleModes": ["Persistent"]}})
    kube.create(RT_STORAGECLASS, _storage_class("hcloud-volumes", "csi.hetzner.cloud", default=True, expand=True))
    # A second default class: what installing local-path-provisioner with its defaults leaves behind.
    kube.create(RT_STORAGECLASS, _storage_class("local-path", "rancher.io/local-path", default=True, expand=False))
    for definition in SNAPSHOT_CRDS:
        kube.create(RT_CRD, copy.deepcopy(definition))


def bootstrap(sb: "Sandbox") -> None:
    """Create the pre-provisioned clusters that are not in the state yet (never touch existing ones)."""
    known = sb.store.section("kube")
    if BYO_CLUSTER not in known:
        _bootstrap_byo(sb)
    if HETZNER_CLUSTER not in known:
        _bootstrap_hetzner(sb)


# ---- the simulated host as a directory ---------------------------------------------------------
def _os_release(os_: dict) -> str:
    os_id = os_.get("id") or "linux"
    ver = os_.get("versionId") or ""
    pretty = os_.get("prettyName") or f"{os_id} {ver}".strip()
    lines = [f'PRETTY_NAME="{pretty}"', f'NAME="{os_.get("name") or os_id.capitalize()}"', f'VERSION_ID="{ver}"',
             f"ID={os_id}"]
    if os_.get("idLike"):
        lines.append(f"ID_LIKE={os_['idLike']}")
    if os_.get("codename"):
        lines.append(f"VERSION_CODENAME={os_['codename']}")
    return "\n".join(lines) + "\n"


def _nvidia_smi_xml(gpu: dict, driver: dict, count: int) -> str:
    """What `nvidia-smi -q -x` prints, reduced to the fields the probe reads."""
    bus = gpu.get("pciBusId") or "00000000:01:00.0"
    dev = (gpu.get("pciDeviceId") or "0x0000").lower().replace("0x", "")
    gpus = []
    for i in range(count):
        bus_i = bus if i == 0 else f"00000000:{1 + i:02X}:00.0"
        gpus.append(
            f'\t<gpu id="{bus_i}">\n'
            f"\t\t<product_name>{gpu.get('model', 'NVIDIA GPU')}</product_name>\n"
            f"\t\t<product_brand>NVIDIA</product_brand>\n"
            f"\t\t<product_architecture>{gpu.get('architecture') or 'N/A'}</product_architecture>\n"
            f"\t\t<persistence_mode>Enabled</persistence_mode>\n"
            f"\t\t<mig_mode>\n\t\t\t<current_mig>{gpu.get('mig', 'Disabled')}</current_mig>\n"
            f"\t\t\t<pending_mig>{gpu.get('mig', 'Disabled')}</pending_mig>\n\t\t</mig_mode>\n"
            f"\t\t<uuid>{gpu.get('uuid') or 'GPU-00000000-0000-0000-0000-00000000000' + str(i)}</uuid>\n"
            f"\t\t<minor_number>{i}</minor_number>\n"
            f"\t\t<pci>\n\t\t\t<pci_bus_id>{bus_i}</pci_bus_id>\n"
            f"\t\t\t<pci_device_id>{dev.upper()}10DE</pci_device_id>\n\t\t</pci>\n"
            f"\t\t<fb_memory_usage>\n\t\t\t<total>{gpu.get('memoryMiB', 0)} MiB</total>\n\t\t</fb_memory_usage>\n"
            f"\t\t<ecc_mode>\n\t\t\t<current_ecc>{gpu.get('ecc', 'Enabled')}</current_ecc>\n"
            f"\t\t\t<pending_ecc>{gpu.get('ecc', 'Enabled')}</pending_ecc>\n\t\t</ecc_mode>\n"
            f"\t</gpu>\n")
    return ('<?xml version="1.0" ?>\n<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v13.dtd">\n<nvidia_smi_log>\n'
            f"\t<driver_version>{driver.get('version', '')}</driver_version>\n"
            f"\t<cuda_version>{driver.get('cudaVersion', 'N/A')}</cuda_version>\n"
            f"\t<attached_gpus>{count}</attached_gpus>\n" + "".join(gpus) + "</nvidia_smi_log>\n")


def _write(root: str, rel: str, data: str | bytes) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def write_host_root(root: str, profile: dict | None, node: dict) -> None:
    """Lay out the files the preflight probe reads from a host, as the profile describes that host.

    Paths follow gpuplat_probe/collect.py: /proc/driver/nvidia/version, /sys/module/nvidia/version,
    /etc/os-release, /proc/sys/kernel/osrelease, /lib/modules/<release>/build, the EFI SecureBoot
    variable, /sys/bus/pci/devices/<addr>/{vendor,device,class} and the captured
    /gpuplat-probe/nvidia-smi-q.xml (a binary under a foreign root cannot run, so real hosts'
    tool output is captured there too).
    """
    info = (node.get("status") or {}).get("nodeInfo") or {}
    profile = profile or {}
    kernel = profile.get("kernel") or {}
    release = kernel.get("release") or info.get("kernelVersion") or "6.8.0-57-generic"
    os_ = profile.get("os") or {"prettyName": info.get("osImage") or "Linux", "id": "linux"}
    _write(root, "proc/sys/kernel/osrelease", release + "\n")
    _write(root, "etc/os-release", _os_release(os_))
    os.makedirs(os.path.join(root, "sys/bus/pci/devices"), exist_ok=True)
    if kernel.get("headers"):
        _write(root, f"lib/modules/{release}/build/Makefile", "# kernel build tree (simulated)\n")
        _write(root, f"usr/src/linux-headers-{release}/Makefile", "# kernel headers (simulated)\n")
    secure_boot = profile.get("secureBoot", "unknown")
    if secure_boot in ("enabled", "disabled"):
        var = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
        _write(root, f"sys/firmware/efi/efivars/{var}", b"\x06\x00\x00\x00" + (b"\x01" if secure_boot == "enabled"
                                                                               else b"\x00"))
    gpu = profile.get("gpu")
    if not gpu:
        return
    count = profile_gpu_count(profile)
    dev = (gpu.get("pciDeviceId") or "0x0000").lower()
    for i in range(count):
        addr = f"0000:{1 + i:02x}:00.0"
        _write(root, f"sys/bus/pci/devices/{addr}/vendor", "0x10de\n")
        _write(root, f"sys/bus/pci/devices/{addr}/device", dev + "\n")
        _write(root, f"sys/bus/pci/devices/{addr}/class", "0x030200\n")
    driver = profile.get("driver") or {}
    if driver.get("installed"):
        version = driver.get("version") or "580.159.04"
        if driver.get("flavour", "open") == "open":
            nvrm = (f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {version}  Release Build  "
                    f"(dvs-builder@U22-I3-AF03-09-1)  Thu Oct 30 00:12:09 UTC 2025\n")
        else:
            nvrm = f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Thu Oct 30 00:12:09 UTC 2025\n"
        _write(root, "proc/driver/nvidia/version",
               nvrm + "GCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)\n")
        _write(root, "sys/module/nvidia/version", version + "\n")
        _write(root, "gpuplat-probe/nvidia-smi-q.xml", _nvidia_smi_xml(gpu, driver, count))


# ---- admin ----------------------------------------------------------------------------------------
def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def put_host_profile(sb: "Sandbox", req: Request):
    """`{node, profile, replace?}`: merge `profile` into the node's host profile (null removes a key),
    or replace it whole with `replace: true`."""
    cid = resolve_cluster(sb, req.match["cluster"])
    body = req.json()
    node_name, patch = body.get("node"), body.get("profile")
    if not node_name or not isinstance(patch, dict):
        raise ApiError(400, "host-profile needs `node` and an object `profile`")
    kube = sb.kube(cid)
    node = kube.get_object("", "nodes", None, node_name)
    if node is None:
        raise ApiError(404, f"no node {node_name!r} in sandbox cluster {cid}")
    prof = patch if body.get("replace") else _merge(host_profile(node) or {}, patch)
    sb_state = prof.get("secureBoot", "unknown")
    if sb_state not in SECURE_BOOT_STATES:
        raise ApiError(400, f"profile.secureBoot must be one of {', '.join(SECURE_BOOT_STATES)}, got {sb_state!r}")
    write_meta(kube, RT_NODE, node, annotations={HOST_PROFILE: json.dumps(prof, sort_keys=True)})
    return {"cluster": cid, "node": node_name, "profile": prof}


def get_host_profiles(sb: "Sandbox", req: Request):
    cid = resolve_cluster(sb, req.match["cluster"])
    kube = sb.kube(cid)
    out = {}
    for node in kube.list_objects("", "nodes"):
        prof = host_profile(node)
        if prof is not None:
            out[node["metadata"]["name"]] = prof
    return {"cluster": cid, "profiles": out, "gpuResource": GPU}


ADMIN_ROUTES = [
    Route("PUT", r"/sandbox/kube/(?P<cluster>[^/]+)/host-profile", put_host_profile, "sim.hostProfile.put"),
    Route("GET", r"/sandbox/kube/(?P<cluster>[^/]+)/host-profile", get_host_profiles, "sim.hostProfile.get"),
]
