#!/usr/bin/env python3
"""Merges moevk-bench JSON files from several machines into one table and one SVG chart: the
cross-vendor comparison. Plain Python, no plotting library.

Two views. --view time (the default): each stage's GPU median in ms, on a log axis in the chart
(an H100's 0.3 ms and lavapipe's 700 ms for the same case both stay readable). --view ceiling:
what makes vendors comparable, each stage's bandwidth as a share of its own device's copy
ceiling (measured by moevk-bench in the same run), and its time in launch floors (the device's
empty-dispatch time): 100 % means the stage moves its bytes as fast as the device copies.

usage: merge.py RESULT.json [RESULT.json ...] [--svg FILE] [--stage route|dispatch|combine|...]
                [--view time|ceiling]
"""
import argparse
import json
import math
import sys

COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7"]


def case_key(c):
    return (c["T"], c["E"], c["k"], c["d"], c["dtype"], c["policy"])


def key_label(key):
    return f"T={key[0]} E={key[1]} k={key[2]} d={key[3]} {key[4]} {key[5]}"


def ceiling_share(report, stage):
    """The stage's bytes per second as a share of its device's copy ceiling (0..1), or None."""
    gbps, ceiling = stage.get("gbps"), report.get("copy_gbps")
    return gbps / ceiling if gbps is not None and ceiling else None


def floors(report, stage):
    floor = report.get("launch_floor_ms")
    return stage["median_ms"] / floor if floor else None


def load(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        label = f'{report["device"]} ({report["driver_info"]})'
        runs.append((label, report, {case_key(c): c for c in report["cases"]}))
    keys = []
    for _, report, _ in runs:
        for c in report["cases"]:
            if case_key(c) not in keys:
                keys.append(case_key(c))
    return runs, keys


def print_table(runs, keys, stage, view):
    if view == "time":
        print(f"{stage}: GPU median ms per device")
    else:
        print(f"{stage}: share of the device's copy ceiling, and launch floors, per device")
    for i, (label, report, _) in enumerate(runs):
        print(f"  [{i}] {label}: copy {report['copy_gbps']:.0f} GB/s, "
              f"launch floor {report['launch_floor_ms']:.4f} ms")
    width = 10 if view == "time" else 16
    print(f"{'T':>7} {'E':>4} {'k':>2} {'d':>5} {'type':<4} {'policy':<8} | " +
          " ".join(f"{'[' + str(i) + ']':>{width}}" for i in range(len(runs))))
    for key in keys:
        cells = []
        for _, report, cases in runs:
            c = cases.get(key)
            s = c.get(stage) if c else None
            if not s:
                cells.append(f"{'-':>{width}}")
            elif view == "time":
                cells.append(f"{s['median_ms']:10.3f}")
            else:
                share, n = ceiling_share(report, s), floors(report, s)
                text = (f"{100 * share:5.1f}%" if share is not None else "-") + \
                       (f" {n:7.1f}fl" if n is not None else "")
                cells.append(f"{text:>{width}}")
        print(f"{key[0]:7} {key[1]:4} {key[2]:2} {key[3]:5} {key[4]:<4} {key[5]:<8} | " +
              " ".join(cells))


def log_axis(values):
    """Whole decades around the values: (lowest exponent, highest exponent)."""
    low = math.floor(math.log10(min(values)))
    high = math.ceil(math.log10(max(values)))
    return low, high if high > low else low + 1


def write_svg(path, stage, runs, keys, view):
    bar, gap, left, width, top = 12, 8, 300, 760, 56 + 16 * len(runs)
    bars = {}  # (row, run) -> (value, label)
    for row, key in enumerate(keys):
        for i, (_, report, cases) in enumerate(runs):
            c = cases.get(key)
            s = c.get(stage) if c else None
            if not s:
                continue
            if view == "time":
                if s["median_ms"] > 0:
                    bars[row, i] = (s["median_ms"], f"{s['median_ms']:.3g} ms")
            else:
                share = ceiling_share(report, s)
                if share is not None:
                    bars[row, i] = (share, f"{100 * share:.1f}%")
    if view == "time":
        low, high = log_axis([v for v, _ in bars.values()] or [1.0])
        scale = lambda v: (math.log10(v) - low) / (high - low) * width
        ticks = [(10.0 ** e, f"{10.0 ** e:g} ms") for e in range(low, high + 1)]
        title = f"moevk {stage}: GPU median ms (log scale), lower is better"
    else:
        most = max([1.0] + [v for v, _ in bars.values()])
        scale = lambda v: v / most * width
        ticks = [(f / 4 * most, f"{100 * f / 4 * most:.0f}%") for f in range(5)]
        title = f"moevk {stage}: share of each device's own copy ceiling, higher is better"
    height = top + len(keys) * (bar * len(runs) + gap) + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="15">{escape(title)}</text>']
    for i, (label, _, _) in enumerate(runs):
        y = 38 + 16 * i
        out.append(f'<rect x="10" y="{y - 10}" width="12" height="12" fill="{COLORS[i % len(COLORS)]}"/>'
                   f'<text x="28" y="{y}">{escape(label)}</text>')
    for value, label in ticks:
        x = left + scale(value)
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 20}" '
                   f'stroke="#ccc"/><text x="{x:.1f}" y="{top - 9}" font-size="10" '
                   f'text-anchor="middle">{escape(label)}</text>')
    for row, key in enumerate(keys):
        y0 = top + row * (bar * len(runs) + gap)
        out.append(f'<text x="10" y="{y0 + bar}">{escape(key_label(key))}</text>')
        for i in range(len(runs)):
            if (row, i) not in bars:
                continue
            value, label = bars[row, i]
            w = max(scale(value), 1.0)
            y = y0 + i * bar
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar - 1}" fill="{COLORS[i % len(COLORS)]}"/>'
                       f'<text x="{left + w + 4:.1f}" y="{y + bar - 2}" font-size="10">{escape(label)}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--svg")
    parser.add_argument("--stage", default="route")
    parser.add_argument("--view", choices=["time", "ceiling"], default="time")
    args = parser.parse_args()
    runs, keys = load(args.files)
    print_table(runs, keys, args.stage, args.view)
    if args.svg:
        write_svg(args.svg, args.stage, runs, keys, args.view)


if __name__ == "__main__":
    sys.exit(main())
