#!/usr/bin/env python3
"""bench/merge.py on the recorded H100 and lavapipe results, as a new user would merge them:
both views' tables and charts. The time chart's axis is logarithmic (so that 0.27 ms and 680 ms
both show), the ceiling view's shares are each device's own (gbps / copy_gbps)."""
import math
import os
import subprocess
import sys
import tempfile
import xml.dom.minidom

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = [os.path.join(ROOT, "bench", "results", name)
           for name in ("h100-sweep.json", "lavapipe-quick.json")]
passed = failed = 0


def check(name, condition):
    global passed, failed
    print(("ok   " if condition else "FAIL ") + name)
    passed, failed = passed + bool(condition), failed + (not condition)


def merge(*options):
    with tempfile.TemporaryDirectory() as folder:
        svg = os.path.join(folder, "chart.svg")
        table = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "merge.py"), *RESULTS,
                                "--svg", svg, *options], capture_output=True, text=True)
        chart = xml.dom.minidom.parse(svg) if table.returncode == 0 else None
        return table, chart


def bar_widths(chart, case):
    """The widths of the bars in the row after the label naming the case, by device colour."""
    nodes = [n for n in chart.documentElement.childNodes if n.nodeType == n.ELEMENT_NODE]
    for i, node in enumerate(nodes):
        if node.tagName == "text" and node.firstChild and node.firstChild.data == case:
            bars = [n for n in nodes[i + 1:i + 5] if n.tagName == "rect"]
            return [float(b.getAttribute("width")) for b in bars]
    return []


table, chart = merge()
check("the time view runs", table.returncode == 0 and chart is not None)
if chart:
    ticks = [t.firstChild.data for t in chart.getElementsByTagName("text")
             if t.firstChild and t.firstChild.data.endswith(" ms") and "=" not in t.firstChild.data]
    check("its axis has a tick per decade from 0.01 ms to 1000 ms",
          {"0.01 ms", "0.1 ms", "1 ms", "10 ms", "100 ms", "1000 ms"} <= set(ticks))
    # T = 16384: 0.272 ms on the H100, 680 ms on lavapipe: on a log axis the H100's bar keeps
    # log10(0.272 / 0.01) / 5 of the width, not 0.272 / 680 of it.
    widths = bar_widths(chart, "T=16384 E=64 k=2 d=1024 f32 position")
    check("both devices' bars show at T = 16384, in log proportion",
          len(widths) == 2 and widths[0] > 0.25 * widths[1] and
          abs(widths[1] / widths[0] - math.log10(680.095 / 0.01) / math.log10(0.272 / 0.01)) < 0.05)

table, chart = merge("--view", "ceiling")
check("the ceiling view runs", table.returncode == 0 and chart is not None)
# The H100's route at T = 16384: 0.272 ms for its bytes against its 2958 GB/s copy ceiling.
check("the ceiling view gives each device's own share", " 63.9%" in table.stdout and
      " 3.1%" in table.stdout)
table, _ = merge("--view", "ceiling", "--stage", "dispatch")
check("any stage's view", table.returncode == 0 and "dispatch: share" in table.stdout)

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
