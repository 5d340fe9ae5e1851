#!/usr/bin/env python3
"""The MoE layer's backward in PyTorch autograd and in moevk, on the same machine, in one run.

First the same gradients: a small Mixtral-shaped layer (softmax top-k, renormalised, SwiGLU
experts, f32) is written as a checkpoint, `moevk layer --grad-output` runs its backward of
sum(output * DY), and PyTorch's autograd of the same forward gives dL/dx, dL/dW_g and every
expert's dL/dW; each must agree within 1e-4 of its largest entry. Then the times: at each
benchmark size, PyTorch's forward and forward + backward (wall clock, medians; CPU, or CUDA with
--device cuda), and moevk's forward and backward from `moevk-bench --backward` on its default
device, with the ratios. Without PyTorch or NumPy it says so and exits 0.

usage: compare_torch_layer.py --moevk build/cli/moevk --bench build/bench/moevk-bench
                              [--device cpu|cuda] [--repeat N] [--quick]
"""
import argparse
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    import torch
except ImportError:
    print("compare_torch_layer: PyTorch or NumPy is not installed here: nothing to compare.")
    sys.exit(0)

# (T, E, k, d, f): a small one for a CPU device, then the layer issue's shapes scaled.
CASES = [(512, 8, 2, 256, 512), (2048, 8, 2, 256, 512), (2048, 16, 2, 512, 256)]
QUICK_CASES = [(512, 8, 2, 256, 512)]


def write_safetensors(path, tensors):
    """tensors: name -> float32 numpy array, written in safetensors' format."""
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + length])
    base = 8 + length
    return {name: np.frombuffer(raw[base + v["data_offsets"][0]:base + v["data_offsets"][1]],
                                dtype="<f4").reshape(v["shape"])
            for name, v in header.items() if name != "__metadata__"}


def layer_forward(x, W_g, gate, up, down, k):
    """Mixtral's block: softmax over the logits, top-k, renormalised, SwiGLU experts."""
    logits = x @ W_g.t()
    probs = torch.softmax(logits, dim=1)
    weights, ids = torch.topk(probs, k, dim=1)
    weights = weights / weights.sum(dim=1, keepdim=True)
    out = torch.zeros_like(x)
    for e in range(W_g.shape[0]):
        token, choice = torch.nonzero(ids == e, as_tuple=True)
        if token.numel() == 0:
            continue
        rows = x[token]
        h = torch.nn.functional.silu(rows @ gate[e].t()) * (rows @ up[e].t())
        out = out.index_add(0, token, weights[token, choice, None] * (h @ down[e].t()))
    return out


def check_gradients(moevk, work):
    T, E, k, d, f = 64, 8, 2, 32, 48
    g = torch.Generator().manual_seed(15)
    x = torch.randn(T, d, generator=g)
    W_g = torch.randn(E, d, generator=g) / d ** 0.5
    gate = torch.randn(E, f, d, generator=g) / d ** 0.5
    up = torch.randn(E, f, d, generator=g) / d ** 0.5
    down = torch.randn(E, d, f, generator=g) / f ** 0.5
    dy = torch.randn(T, d, generator=g)
    prefix = "model.layers.0.block_sparse_moe."
    tensors = {prefix + "gate.weight": W_g.numpy()}
    for e in range(E):
        tensors[prefix + "experts.%d.w1.weight" % e] = gate[e].numpy()
        tensors[prefix + "experts.%d.w3.weight" % e] = up[e].numpy()
        tensors[prefix + "experts.%d.w2.weight" % e] = down[e].numpy()
    write_safetensors(os.path.join(work, "model.safetensors"), tensors)
    with open(os.path.join(work, "config.json"), "w") as out:
        json.dump({"model_type": "mixtral", "hidden_size": d, "num_hidden_layers": 1,
                   "num_local_experts": E, "num_experts_per_tok": k, "intermediate_size": f,
                   "hidden_act": "silu"}, out)
    np.save(os.path.join(work, "x.npy"), x.numpy())
    np.save(os.path.join(work, "dy.npy"), dy.numpy())
    result = subprocess.run([moevk, "layer", "--weights", os.path.join(work, "model.safetensors"),
                             "--layer", "0", "--hidden", os.path.join(work, "x.npy"),
                             "--grad-output", os.path.join(work, "dy.npy"),
                             "--out", os.path.join(work, "out")], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit("compare_torch_layer: moevk layer failed: " + result.stderr.strip())
    params = [t.clone().requires_grad_(True) for t in (x, W_g, gate, up, down)]
    (layer_forward(*params, k) * dy).sum().backward()
    grads = read_safetensors(os.path.join(work, "out", "grad_weights.safetensors"))
    pairs = [("dL/dx", np.load(os.path.join(work, "out", "grad_hidden.npy")), params[0].grad),
             ("dL/dW_g", np.load(os.path.join(work, "out", "grad_router.npy")), params[1].grad)]
    for name, index in (("w1", 2), ("w3", 3), ("w2", 4)):
        ours = np.stack([grads[prefix + "experts.%d.%s.weight" % (e, name)] for e in range(E)])
        pairs.append(("dL/d" + name, ours, params[index].grad))
    worst = 0.0
    for name, ours, theirs in pairs:
        theirs = theirs.numpy()
        error = float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30))
        worst = max(worst, error)
        if not error <= 1e-4:
            sys.exit("compare_torch_layer: %s differs from PyTorch's by %.2e of its largest "
                     "entry" % (name, error))
    print("same gradients: dL/dx, dL/dW_g and every expert's dL/dW within %.1e of their "
          "largest entries (T %d, E %d, k %d, d %d, f %d)" % (worst, T, E, k, d, f))


def torch_times(case, device, repeat):
    T, E, k, d, f = case
    g = torch.Generator().manual_seed(3)
    make = lambda *shape: torch.randn(*shape, generator=g).to(device)
    x, W_g = make(T, d), make(E, d) / d ** 0.5
    gate, up, down = make(E, f, d) / d ** 0.5, make(E, f, d) / d ** 0.5, make(E, d, f) / f ** 0.5
    dy = make(T, d)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    forward, both = [], []
    for i in range(repeat + 1):
        params = [t.clone().requires_grad_(True) for t in (x, W_g, gate, up, down)]
        sync()
        t0 = time.perf_counter()
        out = layer_forward(*params, k)
        sync()
        t1 = time.perf_counter()
        (out * dy).sum().backward()
        sync()
        t2 = time.perf_counter()
        if i > 0:  # the first run warms up
            forward.append((t1 - t0) * 1e3)
            both.append((t2 - t0) * 1e3)
    return statistics.median(forward), statistics.median(both) - statistics.median(forward)


def moevk_times(bench, cases, repeat):
    args = [bench, "--backward", "--repeat", str(repeat), "--warmup", "1"]
    for T, E, k, d, f in cases:
        args += ["--layer-case", "%d,%d,%d,%d,%d,0,f32" % (T, E, k, d, f)]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit("compare_torch_layer: moevk-bench failed: " + result.stderr.strip()[-500:])
    table = result.stdout[result.stdout.index("backward beside its forward"):]
    times = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 11 and cells[1].isdigit():
            key = tuple(int(c) for c in cells[1:6])
            times[key] = (float(cells[8]), float(cells[9]))
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--moevk", required=True)
    parser.add_argument("--bench", required=True)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        check_gradients(a.moevk, work)
    cases = QUICK_CASES if a.quick else CASES
    theirs = {case: torch_times(case, a.device, a.repeat) for case in cases}
    ours = moevk_times(a.bench, cases, a.repeat)
    print("PyTorch %s (%s, %d threads) beside moevk (moevk-bench's default device): medians in "
          "ms; backward = forward + backward less the forward" %
          (torch.__version__, a.device, torch.get_num_threads()))
    print("| T | E | k | d | f | PyTorch forward | PyTorch backward | moevk forward | "
          "moevk backward | moevk / PyTorch, backward |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for case in cases:
        forward, backward = theirs[case]
        mine = ours.get(case)
        print("| %d | %d | %d | %d | %d | %.3f | %.3f | %s | %s | %s |" % (
            *case, forward, backward, "%.3f" % mine[0] if mine else "-",
            "%.3f" % mine[1] if mine else "-", "%.2f" % (mine[1] / backward) if mine else "-"))


main()
