"""Where a GPU pays for the catalogue's networks: milliseconds per training step, CPU against GPU.

One epoch of the catalogue's torch candidates (the MLP 128-64 and the CNN 16-32 of
``automl_runner.candidates.torch_candidates``) on 20,000 rows of 64 features, timed per step after a warm-up
epoch, at the batch size the catalogue trains with (64) and at larger ones, with PyTorch's default
Adam (``foreach``) and its ``fused`` kernel on the GPU. It explains ``bench/gpu_worker.py``'s
trials per minute: a step of a small network at batch 64 is a few dozen tiny kernels, so the GPU
waits on the Python loop and kernel launches, not on arithmetic.

    python bench/torch_step_time.py                 # cpu, and cuda:0 when there is one
    python bench/torch_step_time.py --json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def step_ms(architecture: str, device: str, batch: int, fused: bool, rows: int = 20000, classes: int = 10) -> float:
    import torch

    from automl_runner.candidates.torch_candidates import build_net

    torch.manual_seed(0)
    net = build_net(architecture, 64, classes, (128, 64), (16, 32)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4, **({"fused": True} if fused else {}))
    X = torch.randn(rows, 64, device=device)
    y = torch.randint(0, classes, (rows,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch() -> int:
        order = torch.randperm(rows, device=device)
        steps = 0
        for start in range(0, rows, batch):
            idx = order[start:start + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(X[idx]), y[idx]).backward()
            opt.step()
            steps += 1
        return steps

    epoch()  # warm-up: kernels chosen, memory pools filled
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    steps = epoch()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000 / steps


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 256, 1024])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
    rows = []
    for arch in ("mlp", "cnn"):
        for batch in args.batches:
            for device in devices:
                for fused in ([False, True] if device != "cpu" else [False]):
                    ms = step_ms(arch, device, batch, fused)
                    rows.append({"network": arch, "batch": batch, "device": device,
                                 "adam": "fused" if fused else "foreach", "ms_per_step": round(ms, 3),
                                 "s_per_epoch": round(ms * np.ceil(20000 / batch) / 1000, 3)})
    machine = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=1))
        return
    print(f"20,000 rows x 64 features, one epoch after a warm-up; {machine}")
    print("| network | batch | device | Adam | ms/step | s/epoch |")
    print("|---|---:|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['network']} | {r['batch']} | {r['device']} | {r['adam']} | {r['ms_per_step']} | {r['s_per_epoch']} |")


if __name__ == "__main__":
    main()
