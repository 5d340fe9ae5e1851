#!/usr/bin/env python3
"""The same routing work in PyTorch and in moevk, on the same machine, in one invocation.

PyTorch side: softmax, a stable sort for top-k (ties to the lower expert, as moevk promises),
k-major slots by one-hot cumsum (the GShard/Switch way) with the same capacity and position drop
policy, index_copy for dispatch and index_add for combine. It first checks that both produce the
same routing (ids, slots, counts exactly; weights, dispatched and combined rows closely) on a
small batch through `moevk route`, then times route + combine at the benchmark sizes: PyTorch with
CUDA events (or wall clock on the CPU), eager and, where the installed PyTorch has it (2.x),
torch.compile of the same routing written with static shapes; moevk with its GPU timestamps
through `moevk-bench`.
Without PyTorch it says so and exits 0.

usage: compare_torch.py --moevk build/cli/moevk --bench build/bench/moevk-bench [--device cuda|cpu]
                        [--repeat N] [--quick] [--json FILE]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("compare_torch: PyTorch is not installed here, so there is nothing to compare against.")
    sys.exit(0)
try:
    import numpy as np
except ImportError:
    print("compare_torch: NumPy is not installed here (needed for .npy files); nothing compared.")
    sys.exit(0)

CASES = [(4096, 64, 2, 4096), (16384, 64, 2, 4096), (65536, 64, 2, 1024), (16384, 8, 2, 4096),
         (16384, 256, 2, 4096), (16384, 64, 8, 1024)]
QUICK_CASES = [(4096, 64, 2, 1024), (16384, 64, 2, 4096)]


def capacity(T, E, k, factor=1.25, minimum=4):
    return max(minimum, math.ceil(factor * T * k / E))


def torch_route(logits, hidden, k, C):
    """Returns ids, weights, slots, dispatched [E*C, d] and a combine function."""
    T, E = logits.shape
    d = hidden.shape[1]
    probs = torch.softmax(logits, dim=1)
    ids = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]
    weights = probs.gather(1, ids)
    flat = ids.t().reshape(-1)                        # k-major: rank 0 of every token first
    onehot = F.one_hot(flat, E)
    slot = ((torch.cumsum(onehot, 0) - 1) * onehot).sum(1)
    keep = slot < C
    slots = torch.where(keep, slot, torch.full_like(slot, -1)).reshape(k, T).t()
    tokens = torch.arange(T, device=logits.device).repeat(k)
    rows = (flat * C + slot)[keep]
    kept_tokens = tokens[keep]
    dispatched = torch.zeros(E * C, d, dtype=hidden.dtype, device=hidden.device)
    dispatched.index_copy_(0, rows, hidden.index_select(0, kept_tokens))
    kept_weights = weights.t().reshape(-1)[keep]

    def combine(expert_out):
        y = torch.zeros(T, d, dtype=torch.float32, device=hidden.device)
        y.index_add_(0, kept_tokens, kept_weights[:, None] * expert_out.index_select(0, rows).float())
        return y.to(hidden.dtype)

    return ids, weights, slots, dispatched, combine


def route_and_combine_static(logits, hidden, k, C):
    """The same route + combine with shapes that do not depend on the data, so that
    torch.compile can trace it whole: dropped choices go to a spare row E*C (cut off after)
    with weight 0, instead of being filtered out."""
    T, E = logits.shape
    d = hidden.shape[1]
    probs = torch.softmax(logits, dim=1)
    ids = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]
    weights = probs.gather(1, ids).t().reshape(-1)
    flat = ids.t().reshape(-1)
    onehot = F.one_hot(flat, E)
    slot = ((torch.cumsum(onehot, 0) - 1) * onehot).sum(1)
    keep = slot < C
    rows = torch.where(keep, flat * C + slot, torch.full_like(slot, E * C))
    tokens = torch.arange(T, device=logits.device).repeat(k)
    dispatched = torch.zeros(E * C + 1, d, dtype=hidden.dtype, device=hidden.device)
    dispatched.index_copy_(0, rows, hidden.index_select(0, tokens))
    kept_weights = torch.where(keep, weights, torch.zeros_like(weights))
    y = torch.zeros(T, d, dtype=torch.float32, device=hidden.device)
    y.index_add_(0, tokens, kept_weights[:, None] * dispatched.index_select(0, rows).float())
    return dispatched[:E * C], y.to(hidden.dtype)


def compiled_route(device):
    """torch.compile of route_and_combine_static, or the reason there is none (PyTorch 1.x has
    no torch.compile; inductor may lack a compiler)."""
    if not hasattr(torch, "compile"):
        return None, f"PyTorch {torch.__version__} has no torch.compile"
    try:
        compiled = torch.compile(route_and_combine_static, dynamic=False)
        logits = torch.randn(64, 8, device=device)
        hidden = torch.randn(64, 16, device=device)
        want = route_and_combine_static(logits, hidden, 2, capacity(64, 8, 2))[1]
        got = compiled(logits, hidden, 2, capacity(64, 8, 2))[1]
        if (got - want).abs().max().item() > 1e-5 * (want.abs().max().item() + 1):
            return None, "torch.compile's route differs from eager"
        return compiled, None
    except Exception as error:  # an inductor without a C compiler, Triton or a GPU it knows
        return None, f"torch.compile failed: {type(error).__name__}: {str(error).splitlines()[0][:80]}"


def check_same_routing(moevk, device):
    T, E, k, d = 4096, 64, 2, 256
    gen = torch.Generator().manual_seed(7)
    logits = (torch.randn(T, E, generator=gen) * 2).float()
    logits[5, 3] = logits[5, 9]                       # a tie: the lower expert must win
    hidden = torch.randn(T, d, generator=gen).float()
    C = capacity(T, E, k)
    ids, weights, slots, dispatched, combine = torch_route(logits.to(device), hidden.to(device), k, C)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "L.npy"), logits.numpy())
        np.save(os.path.join(tmp, "X.npy"), hidden.numpy())
        np.save(os.path.join(tmp, "Y.npy"), dispatched.cpu().numpy().reshape(E, C, d))
        out = os.path.join(tmp, "out")
        subprocess.run([moevk, "route", "--logits", os.path.join(tmp, "L.npy"), "--k", str(k),
                        "--hidden", os.path.join(tmp, "X.npy"), "--expert-out",
                        os.path.join(tmp, "Y.npy"), "--out", out], check=True)
        got = {name: np.load(os.path.join(out, name + ".npy"))
               for name in ("expert_ids", "weights", "slots", "counts", "dispatched", "combined")}
    problems = []
    if not (got["expert_ids"] == ids.cpu().numpy()).all():
        problems.append("expert ids differ")
    if not (got["slots"] == slots.cpu().numpy()).all():
        problems.append("slots differ")
    counts = (slots.cpu() >= 0).long()
    per_expert = torch.zeros(E, dtype=torch.long).index_add_(0, ids.cpu().reshape(-1), counts.reshape(-1))
    if not (got["counts"] == per_expert.numpy()).all():
        problems.append("counts differ")
    if np.abs(got["weights"] - weights.cpu().numpy()).max() > 1e-6:
        problems.append("weights differ by more than 1e-6")
    if not (got["dispatched"].reshape(E * C, d) == dispatched.cpu().numpy()).all():
        problems.append("dispatched rows differ")
    y = combine(dispatched).cpu().numpy()
    if np.abs(got["combined"] - y).max() > 1e-5 * (np.abs(y).max() + 1):
        problems.append("combined rows differ")
    return problems


def time_torch(case, device, repeats, compiled=None):
    """Median ms of eager route + combine, or of `compiled` (route_and_combine_static's)."""
    T, E, k, d = case
    C = capacity(T, E, k)
    inputs = [(torch.randn(T, E, device=device) * 2, torch.randn(T, d, device=device)) for _ in range(3)]
    times = []
    for i in range(3 + repeats):  # the first three: warm-up (and compilation)
        logits, hidden = inputs[i % 3]
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
        else:
            import time
            t0 = time.perf_counter()
        if compiled:
            compiled(logits, hidden, k, C)
        else:
            _, _, _, dispatched, combine = torch_route(logits, hidden, k, C)
            combine(dispatched)
        if device == "cuda":
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end)
        else:
            ms = (time.perf_counter() - t0) * 1e3
        if i >= 3:
            times.append(ms)
    times.sort()
    return times[len(times) // 2]


def time_moevk(bench, cases, repeats):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.json")
        args = [bench, "--repeat", str(repeats), "--json", path]
        for T, E, k, d in cases:
            args += ["--case", f"{T},{E},{k},{d}"]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            report = json.load(f)
    result = {}
    for c in report["cases"]:
        key = (c["T"], c["E"], c["k"], c["d"])
        result[key] = c["route"]["median_ms"] if "route" in c else None
    return report["device"], result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--moevk", required=True)
    parser.add_argument("--bench", required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true", help="two cases: for a CPU (lavapipe)")
    args = parser.parse_args()
    cases = QUICK_CASES if args.quick else CASES
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)  # as many threads as lavapipe uses
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"PyTorch {torch.__version__} on {name} ({args.device})")
    problems = check_same_routing(args.moevk, args.device)
    if problems:
        print("compare_torch: moevk and PyTorch route differently: " + "; ".join(problems))
        sys.exit(1)
    print("same routing: expert ids, slots, counts and dispatched rows identical; weights and combine within 1e-6 / 1e-5")
    vk_device, moevk_ms = time_moevk(args.bench, cases, args.repeat)
    print(f"moevk on {vk_device} (Vulkan, GPU timestamps); route + combine medians, identity experts")
    compiled, no_compile = compiled_route(args.device)
    print("torch.compile: " + (no_compile or "route + combine with static shapes, inductor") +
          (" (only eager is timed)" if no_compile else ""))
    print(f"{'T':>7} {'E':>4} {'k':>2} {'d':>5} | {'torch ms':>9} {'compile ms':>10} {'moevk ms':>9} "
          f"{'torch/moevk':>11} {'compile/moevk':>13}")
    rows = []
    for case in cases:
        torch_ms = time_torch(case, args.device, args.repeat)
        compile_ms = time_torch(case, args.device, args.repeat, compiled) if compiled else None
        ours = moevk_ms.get(case)
        ratio = torch_ms / ours if ours else float("nan")
        compile_ratio = compile_ms / ours if ours and compile_ms else float("nan")
        rows.append({"T": case[0], "E": case[1], "k": case[2], "d": case[3], "torch_ms": torch_ms,
                     "compile_ms": compile_ms, "moevk_ms": ours, "speedup": ratio,
                     "speedup_over_compile": compile_ratio})
        ours_text = f"{ours:9.3f}" if ours else "  skipped"
        compile_text = f"{compile_ms:10.3f}" if compile_ms else f"{'-':>10}"
        compile_ratio_text = f"{compile_ratio:12.2f}x" if compile_ms and ours else f"{'-':>13}"
        print(f"{case[0]:7} {case[1]:4} {case[2]:2} {case[3]:5} | {torch_ms:9.3f} {compile_text} "
              f"{ours_text} {ratio:10.2f}x {compile_ratio_text}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "torch_device": name, "moevk_device": vk_device,
                       "torch_compile": no_compile or "inductor", "cases": rows}, f, indent=1)


if __name__ == "__main__":
    main()
