#!/usr/bin/env python3
"""Merges moevk-bench JSON files from several machines into one table and one SVG chart: the
cross-vendor comparison. Plain Python, no plotting library.

usage: merge.py RESULT.json [RESULT.json ...] [--svg FILE] [--stage route|dispatch|combine|...]
"""
import argparse
import json
import sys

COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7"]


def case_key(c):
    return (c["T"], c["E"], c["k"], c["d"], c["dtype"], c["policy"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--svg")
    parser.add_argument("--stage", default="route")
    args = parser.parse_args()
    runs = []
    for path in args.files:
        with open(path) as f:
            report = json.load(f)
        label = f'{report["device"]} ({report["driver_info"]})'
        runs.append((label, report, {case_key(c): c for c in report["cases"]}))
    keys = []
    for _, report, _ in runs:
        for c in report["cases"]:
            if case_key(c) not in keys:
                keys.append(case_key(c))
    print(f"{args.stage}: GPU median ms per device (copy ceiling GB/s in the heading)")
    for i, (label, report, _) in enumerate(runs):
        print(f"  [{i}] {label}: copy {report['copy_gbps']:.0f} GB/s, launch floor {report['launch_floor_ms']:.4f} ms")
    print(f"{'T':>7} {'E':>4} {'k':>2} {'d':>5} {'type':<4} {'policy':<8} | " +
          " ".join(f"{'[' + str(i) + ']':>10}" for i in range(len(runs))))
    for key in keys:
        cells = []
        for _, _, cases in runs:
            c = cases.get(key)
            cells.append(f"{c[args.stage]['median_ms']:10.3f}" if c and args.stage in c else f"{'-':>10}")
        print(f"{key[0]:7} {key[1]:4} {key[2]:2} {key[3]:5} {key[4]:<4} {key[5]:<8} | " + " ".join(cells))
    if args.svg:
        write_svg(args.svg, args.stage, runs, keys)


def write_svg(path, stage, runs, keys):
    most = max((c[stage]["median_ms"] for _, _, cases in runs for c in cases.values() if stage in c),
               default=1.0)
    bar, gap, left, width, top = 12, 8, 300, 760, 40 + 16 * len(runs)
    height = top + len(keys) * (bar * len(runs) + gap) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="15">moevk {stage}: GPU median ms, lower is better</text>']
    for i, (label, _, _) in enumerate(runs):
        y = 34 + 16 * i
        out.append(f'<rect x="10" y="{y - 10}" width="12" height="12" fill="{COLORS[i % len(COLORS)]}"/>'
                   f'<text x="28" y="{y}">{escape(label)}</text>')
    for row, key in enumerate(keys):
        y0 = top + row * (bar * len(runs) + gap)
        out.append(f'<text x="10" y="{y0 + bar}">T={key[0]} E={key[1]} k={key[2]} d={key[3]} {key[4]} {key[5]}</text>')
        for i, (_, _, cases) in enumerate(runs):
            c = cases.get(key)
            if not c or stage not in c:
                continue
            ms = c[stage]["median_ms"]
            w = ms / most * width
            y = y0 + i * bar
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 1}" fill="{COLORS[i % len(COLORS)]}"/>'
                       f'<text x="{left + w + 4:.1f}" y="{y + bar - 2}" font-size="10">{ms:.3f}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


if __name__ == "__main__":
    sys.exit(main())
