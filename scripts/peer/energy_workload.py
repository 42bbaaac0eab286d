#!/usr/bin/env python3
"""energy_workload: PyTorch GPU loads for validating mxrlhf's energy measurement.

Run under `mxrlhf monitor`; phases are marked with scripts/mxrlhf_phase.py. The
workload also reads NVML's total-energy counter itself (ctypes on libnvidia-ml.so.1,
no pynvml) at every phase boundary, right after synchronising, as Zeus does: that is
the reference the monitor's figures are compared with (scripts/peer/energy_compare.py).

  energy_workload.py devices OUT.json           CUDA's view of device 0: name, PCI bus id
  energy_workload.py overhead SECONDS OUT.json  bf16 matmul loop; achieved TFLOP/s
  energy_workload.py bursty SECONDS ON OFF OUT.json
        steady references first (cal_on: 6 s of matmuls, cal_off: 4 s idle), then a
        duty cycle of ON s of matmuls (phase burst_on) and OFF s idle (burst_off)
  energy_workload.py phases STEPS OUT.json
        study-like phases of seconds each: rollout (many small matmuls, decode-like),
        reward_inference (medium), gradient_update (large), STEPS times
"""
import ctypes
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import mxrlhf_phase as mp  # noqa: E402

import torch  # noqa: E402


def cuda_bus_id():
    """PCI bus id of CUDA device 0, as CUDA reports it."""
    try:
        import cupy
        return cupy.cuda.Device(0).pci_bus_id
    except Exception:
        p = torch.cuda.get_device_properties(0)
        return "%04x:%02x:%02x.0" % (p.pci_domain_id, p.pci_bus_id, p.pci_device_id)


class Nvml:
    def __init__(self, bus):
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        assert self.lib.nvmlInit_v2() == 0
        self.h = ctypes.c_void_p()
        r = self.lib.nvmlDeviceGetHandleByPciBusId_v2(bus.encode(), ctypes.byref(self.h))
        assert r == 0, f"nvmlDeviceGetHandleByPciBusId_v2({bus}) = {r}"

    def energy_J(self):
        v = ctypes.c_ulonglong()
        assert self.lib.nvmlDeviceGetTotalEnergyConsumption(self.h, ctypes.byref(v)) == 0
        return v.value / 1000.0


class Phases:
    """Marks phases and reads the counter at each boundary (after the sync)."""

    def __init__(self, nvml):
        self.nv = nvml
        self.ref = {}
        self.windows = []

    def run(self, name, body):
        # mark, then read: both ends alike, so the read's latency shifts, not shrinks
        torch.cuda.synchronize()
        mp.begin(name, synchronize=False)
        t0, e0 = time.clock_gettime(time.CLOCK_MONOTONIC), self.nv.energy_J()
        body()
        torch.cuda.synchronize()
        mp.end(name, synchronize=False)
        t1, e1 = time.clock_gettime(time.CLOCK_MONOTONIC), self.nv.energy_J()
        r = self.ref.setdefault(name, {"energy_J": 0.0, "runtime_s": 0.0, "windows": 0})
        r["energy_J"] += e1 - e0
        r["runtime_s"] += t1 - t0
        r["windows"] += 1


def matmuls_for(seconds, n=8192):
    """A body that keeps the GPU busy with n^3 bf16 matmuls for about `seconds`."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(10):  # warm up (library set-up, clocks) before timing
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    per = (time.perf_counter() - t) / 20
    k = max(1, round(seconds / per))

    def body():
        for _ in range(k):
            a @ b
    return body, per


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    torch.cuda.init()
    bus = cuda_bus_id()
    if mode == "devices":
        out = {"cuda_name": torch.cuda.get_device_name(0), "cuda_bus_id": bus,
               "torch": torch.__version__, "cuda": torch.version.cuda}
        json.dump(out, open(args[0], "w"), indent=1)
        print(json.dumps(out))
        return
    if mode == "overhead":
        seconds = float(args[0])
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            for _ in range(50):
                a @ b
            torch.cuda.synchronize()
            n += 50
        dt = time.perf_counter() - t
        out = {"tflops": 2 * 8192**3 * n / dt / 1e12, "matmuls": n, "seconds": dt}
        json.dump(out, open(args[1], "w"))
        print(json.dumps(out))
        return
    nv = Nvml(bus)
    ph = Phases(nv)
    e_start, t_start = nv.energy_J(), time.clock_gettime(time.CLOCK_MONOTONIC)
    if mode == "bursty":
        total, on, off = float(args[0]), float(args[1]), float(args[2])
        cal, _ = matmuls_for(6.0)
        ph.run("cal_on", cal)
        ph.run("cal_off", lambda: time.sleep(4.0))
        burst, per = matmuls_for(on)
        t_end = time.perf_counter() + total
        while time.perf_counter() < t_end:
            ph.run("burst_on", burst)
            ph.run("burst_off", lambda: time.sleep(off))
        extra = {"matmul_s": per, "on_s": on, "off_s": off}
        outp = args[3]
    elif mode == "phases":
        steps = int(args[0])
        small_a = torch.randn(64, 8192, device="cuda", dtype=torch.bfloat16)
        small_b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        mid_a = torch.randn(2048, 8192, device="cuda", dtype=torch.bfloat16)

        def rollout():  # decode-like: memory-bound small matmuls for ~4 s
            t = time.perf_counter()
            while time.perf_counter() - t < 4.0:
                for _ in range(200):
                    small_a @ small_b
                torch.cuda.synchronize()

        def reward():  # a batch forward: medium matmuls for ~2 s
            t = time.perf_counter()
            while time.perf_counter() - t < 2.0:
                for _ in range(50):
                    mid_a @ small_b
                torch.cuda.synchronize()

        grad, _ = matmuls_for(3.0)
        for _ in range(steps):
            ph.run("rollout", rollout)
            ph.run("reward_inference", reward)
            ph.run("gradient_update", grad)
        extra = {}
        outp = args[1]
    else:
        sys.exit(f"unknown mode {mode}")
    torch.cuda.synchronize()
    out = {"cuda_bus_id": bus, "phases": ph.ref,
           "whole_J": nv.energy_J() - e_start,
           "whole_s": time.clock_gettime(time.CLOCK_MONOTONIC) - t_start, **extra}
    json.dump(out, open(outp, "w"), indent=1)
    print(json.dumps({k: v for k, v in out.items() if k != "phases"}))


if __name__ == "__main__":
    main()
