#!/usr/bin/env python3
"""Print the machine a run is on, and where bpfree's packages come from (part ``env`` of
scripts/gpu_first_run.sh): the GPU and its driver (nvidia-smi, NVML), torch and the CUDA and
cuDNN it was built with, the precision switches, NVML's energy counter and instantaneous power
field, and for every package bpfree declares (pyproject.toml) and those the carried wheels
bring: its version and whether it came from the carried wheels (``--site``), the machine's
own environment, or is missing. Writes the same as JSON with ``--out FILE``.

    python3 scripts/gpu_env.py [--site /tmp/bpfree-site] [--out env.json]

Imports only the standard library and torch (pynvml where present): it runs where nothing
else is installed yet."""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRIED = [
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "rapidfuzz",
    "arrow",
]
SMI_FIELDS = "name,driver_version,memory.total,power.limit,clocks.max.sm,pstate,compute_cap"


def declared() -> list[str]:
    """The package names pyproject.toml declares (its runtime dependencies)."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    names = re.findall(r'^\s*"([A-Za-z0-9_.\-]+)', block.group(1), re.M) if block else []
    return names


def origin(name: str, site: Path | None) -> dict:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return {"package": name, "version": None, "from": "missing", "path": None}
    path = Path(str(dist.locate_file(""))).resolve()
    carried = site is not None and (path == site.resolve() or site.resolve() in path.parents)
    return {
        "package": name,
        "version": dist.version,
        "from": "carried wheels" if carried else "machine",
        "path": str(path),
    }


def nvidia_smi() -> dict:
    if shutil.which("nvidia-smi") is None:
        return {"error": "nvidia-smi not on PATH"}
    try:
        proc = subprocess.run(
            ["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip() or f"exit {proc.returncode}"}
    return {
        "gpus": [
            dict(zip(SMI_FIELDS.split(","), (v.strip() for v in line.split(",")))) for line in proc.stdout.splitlines()
        ]
    }


def torch_facts() -> dict:
    try:
        import torch
    except Exception as err:  # noqa: BLE001
        return {"error": f"{type(err).__name__}: {err}"}
    facts = {
        "torch": torch.__version__,
        "cuda_built": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
        "cublas_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts |= {
            "devices": torch.cuda.device_count(),
            "device": props.name,
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "arch_list": torch.cuda.get_arch_list(),
        }
    return facts


def nvml_facts() -> dict:
    try:
        import pynvml
    except ImportError:
        return {"error": "pynvml (nvidia-ml-py) is not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as err:  # noqa: BLE001
        return {"error": f"NVML unavailable: {err}"}
    out: dict = {}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        out["driver"] = _text(pynvml.nvmlSystemGetDriverVersion())
        for key, call in (
            ("energy_counter_mj", lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)),
            ("power_w", lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000),
        ):
            try:
                out[key] = call()
            except Exception as err:  # noqa: BLE001
                out[key] = f"{type(err).__name__}: {err}"
        sys.path.insert(0, str(ROOT))
        from bpfree.measure.energy import nvml_instant_power_w

        read, why = nvml_instant_power_w(pynvml, handle)
        out["instant_power_w"] = read() if read is not None else why
    except Exception as err:  # noqa: BLE001
        out["error"] = f"{type(err).__name__}: {err}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--site", help="the folder the carried wheels were installed into (pip --target)")
    p.add_argument("--out", help="write the same as JSON here")
    args = p.parse_args(argv)
    site = Path(args.site) if args.site else None
    names = list(dict.fromkeys(declared() + CARRIED))
    env = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "host": platform.node(),
        "nvidia_smi": nvidia_smi(),
        "torch": torch_facts(),
        "nvml": nvml_facts(),
        "packages": [origin(n, site) for n in names],
    }
    print(f"python {env['python']} ({env['executable']}), {env['platform']}, host {env['host']}")
    smi = env["nvidia_smi"]
    for gpu in smi.get("gpus", []):
        print("gpu: " + ", ".join(f"{k} {v}" for k, v in gpu.items()))
    if "error" in smi:
        print(f"gpu: {smi['error']}")
    print("torch: " + ", ".join(f"{k} {v}" for k, v in env["torch"].items()))
    print("nvml: " + ", ".join(f"{k} {v}" for k, v in env["nvml"].items()))
    width = max(len(n) for n in names)
    for pkg in env["packages"]:
        print(f"  {pkg['package']:<{width}}  {pkg['version'] or '-':<12} {pkg['from']}")
    if args.out:
        Path(args.out).write_text(json.dumps(env, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
