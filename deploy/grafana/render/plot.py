#!/usr/bin/python3
"""Plot the CSV of scrape.go: the PeSIT metrics of a node during a short run.

Usage: plot.py metrics.csv out.png

Needs Debian's python3-matplotlib (apt-get install python3-matplotlib) and
nothing else. Throughput is computed as Prometheus' rate() would be, over a
1 s window of the byte counters, which move when a transfer ends.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    phases, rows = [], []
    with open(path, newline="") as f:
        lines = [l for l in f if l.strip()]
    body = []
    for l in lines:
        if l.startswith("# phase,"):
            _, t, what = l.rstrip("\n").split(",", 2)
            phases.append((float(t), what))
        elif not l.startswith("#"):
            body.append(l)
    for r in csv.DictReader(body):
        rows.append({k: float(v) for k, v in r.items()})
    if not rows:
        sys.exit(f"{path}: no samples")
    return phases, rows


def rate(rows, key, window=1.0):
    out = []
    for i, r in enumerate(rows):
        j = i
        while j > 0 and r["t"] - rows[j - 1]["t"] <= window + 1e-6:
            j -= 1
        dt = r["t"] - rows[j]["t"]
        out.append((r[key] - rows[j][key]) / dt / 1e6 if dt > 0 else 0.0)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    phases, rows = load(sys.argv[1])
    t = [r["t"] for r in rows]
    col = lambda k: [r[k] for r in rows]  # noqa: E731

    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    fig.suptitle("Vectis node, PeSIT metrics scraped from /metrics every 200 ms")

    ax = axes[0]
    ax.step(t, col("transfers_done"), where="post", label='transfers_total{result="done"}')
    ax.step(t, col("transfers_not_done"), where="post", label="transfers_total{result!=\"done\"}")
    ax.step(t, col("conn_accepted"), where="post", label='connections_total{result="accepted"}', linestyle="--")
    ax.set_ylabel("count")
    ax.set_title("vectis_pesit_transfers_total, vectis_pesit_connections_total", fontsize=9)

    ax = axes[1]
    ax.plot(t, rate(rows, "bytes_receive"), label='direction="receive" (push)')
    ax.plot(t, rate(rows, "bytes_send"), label='direction="send" (pull)')
    ax.set_ylabel("MB/s")
    ax.set_title("rate(vectis_pesit_transfer_bytes_total[1s])", fontsize=9)

    ax = axes[2]
    ax.step(t, col("sessions_active"), where="post", label='server="PESITSRV"')
    ax.set_ylabel("sessions")
    ax.set_title("vectis_pesit_sessions_active", fontsize=9)

    ax = axes[3]
    ax.step(t, col("conn_refused"), where="post", label='connections_total{result="refused"}')
    ax.step(t, col("diag_3_304"), where="post", label='diagnostics_total{code="3/304"}', linestyle="--")
    ax.step(t, col("diag_2_205"), where="post", label='diagnostics_total{code="2/205"}')
    ax.set_ylabel("count")
    ax.set_title("refusals: vectis_pesit_connections_total, vectis_pesit_diagnostics_total", fontsize=9)
    ax.set_xlabel("seconds since the start of the run")

    for ax in axes:
        for pt, _ in phases:
            ax.axvline(pt, color="grey", linestyle=":", linewidth=0.8)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    top = axes[0]
    ymax = top.get_ylim()[1]
    for pt, what in phases:
        top.annotate(what, (pt, ymax), xytext=(2, -2), textcoords="offset points",
                     rotation=90, va="top", fontsize=7, color="dimgrey")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
