#!/usr/bin/env python3
"""Turns the load harness's JSON lines into a markdown table and a PNG chart."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
out = sys.argv[2]
label = {"direct": "(a) direct", "proxy": "(b) nginx", "mconnect": "(c) mconnect"}


def find(target, payload, mode, rate=None):
    for r in rows:
        if (r["target"], r["payload"], r["mode"]) == (target, payload, mode) and r.get("offered_rate") == rate:
            return r
    return None


lines = ["| target | payload | mode | rate | throughput (req/s) | p50 (ms) | p99 (ms) | p99.9 (ms) | errors | CPU µs/req |",
         "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for r in rows:
    cpu = r.get("cpu_us_per_request")
    lines.append(
        f"| {label[r['target']]} | {r['payload']} ({r['response_bytes']} B) | {r['mode']} | {r.get('offered_rate') or '-'} "
        f"| {r['throughput_rps']:.0f} | {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['p999_us'] / 1000:.2f} "
        f"| {r['errors']} | {cpu:.0f} |" if cpu is not None else
        f"| {label[r['target']]} | {r['payload']} | {r['mode']} | {r.get('offered_rate') or '-'} | {r['throughput_rps']:.0f} "
        f"| {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | {r['p999_us'] / 1000:.2f} | {r['errors']} | - |"
    )
lines.append("")
for payload in ("small", "large"):
    a, b, c = (find(t, payload, "closed") for t in ("direct", "proxy", "mconnect"))
    if a and b and c and a["throughput_rps"] and b["throughput_rps"]:
        lines.append(
            f"- {payload}: c/a = {c['throughput_rps'] / a['throughput_rps']:.2f}, "
            f"c/b = {c['throughput_rps'] / b['throughput_rps']:.2f} (closed-loop throughput)"
        )
for rate in (500, 1000):
    a, c = find("direct", "small", "open", rate), find("mconnect", "small", "open", rate)
    if a and c:
        lines.append(f"- added p99 at {rate} req/s: {(c['p99_us'] - a['p99_us']) / 1000:.2f} ms")
open(out + ".md", "w").write("\n".join(lines) + "\n")

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, payload in zip(axes, ("small", "large")):
    data = [find(t, payload, "closed") for t in ("direct", "proxy", "mconnect")]
    names = [label[t] for t, d in zip(("direct", "proxy", "mconnect"), data) if d]
    values = [d["throughput_rps"] for d in data if d]
    ax.bar(names, values, color=["#4c72b0", "#55a868", "#c44e52"][: len(values)])
    ax.set_title(f"closed-loop throughput, {payload} payload")
    ax.set_ylabel("requests/s")
fig.tight_layout()
fig.savefig(out + ".png", dpi=110)
print("\n".join(lines))
