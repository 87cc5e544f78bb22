#!/usr/bin/python3
"""Figures of fewmul runs, one command each (needs Debian's python3-matplotlib; nothing else in fewmul does).

  apps/scripts/plot.py curves OUT.png LOG.jsonl...        train/validation/test error per epoch, runs overlaid
  apps/scripts/plot.py histogram OUT.png HIST.json         exponents log2|x| of each weight layer's input
                                                   (written by `fewmul train --histogram HIST.json`)
  apps/scripts/plot.py kmax OUT.png [K=]LOG.jsonl...       test error against the largest allowed shift (--qbp-kmax);
                                                   K from K=LOG, else from the log's summary line

LOG.jsonl is what `fewmul train` prints on stdout: one JSON object per epoch, then a summary. The format
of OUT follows its extension (.png, .svg, .pdf). Exit status 2 on bad input, with a message.
"""
import json
import os
import sys


def fail(message):
    print("plot.py: " + message, file=sys.stderr)
    sys.exit(2)


def pyplot():
    try:
        import matplotlib
    except ImportError:
        fail("needs matplotlib (Debian: apt-get install python3-matplotlib)")
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def read_log(path):
    """(epochs, summary) of a trainer log: the per-epoch objects and the summary object (or None)."""
    epochs, summary = [], None
    try:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    fail("%s:%d: not a JSON line" % (path, number))
                if obj.get("summary"):
                    summary = obj
                elif all(k in obj for k in ("epoch", "train_error", "val_error", "test_error")):
                    epochs.append(obj)
    except OSError as e:
        fail("cannot read %s: %s" % (path, e.strerror))
    if not epochs:
        fail("%s has no epoch lines (is it the stdout of `fewmul train`?)" % path)
    return epochs, summary


def run_label(path, epochs):
    return "%s (%s)" % (epochs[0].get("method", "?"), os.path.splitext(os.path.basename(path))[0])


def curves(out, logs):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = [("train_error", ":", "train"), ("val_error", "--", "validation"), ("test_error", "-", "test")]
    for i, path in enumerate(logs):
        epochs, _ = read_log(path)
        color = "C%d" % (i % 10)
        x = [e["epoch"] for e in epochs]
        for key, style, name in styles:
            ax.plot(x, [100.0 * e[key] for e in epochs], style, color=color,
                    label="%s %s" % (run_label(path, epochs), name))
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Learning curves")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def histogram(out, path):
    plt = pyplot()
    try:
        with open(path) as f:
            data = json.load(f)
        layers = data["layers"]
    except (OSError, ValueError, KeyError) as e:
        fail("%s is not a histogram of `fewmul train --histogram`: %s" % (path, e))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    used = [layer["min_exponent"] + i for layer in layers for i, c in enumerate(layer["counts"]) if c]
    if used:  # the clamped range is wide; show where values are
        ax.set_xlim(min(used) - 1, max(used) + 1)
    for layer in layers:
        counts, low = layer["counts"], layer["min_exponent"]
        total = float(sum(counts) + layer["zeros"]) or 1.0
        label = "%s, %.0f%% zeros" % (layer["layer"].split(" (")[0], 100.0 * layer["zeros"] / total)
        ax.plot(range(low, low + len(counts)), [c / total for c in counts], marker=".", label=label)
    ax.set_xlabel("exponent floor(log2|x|)")
    ax.set_ylabel("fraction of values")
    ax.set_title("Hidden representations at epoch %s (%s)" % (data.get("epoch", "?"), data.get("method", "?")))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def kmax(out, args):
    plt = pyplot()
    points = {}
    for arg in args:
        k, sep, path = arg.partition("=")
        if not sep:
            path, k = arg, None
        epochs, summary = read_log(path)
        if k is None:
            if not summary or "qbp_kmax" not in summary:
                fail("%s has no summary with qbp_kmax; give it as K=%s" % (path, path))
            k = summary["qbp_kmax"]
        try:
            k = int(k)
        except ValueError:
            fail("'%s' is not a whole number kmax" % k)
        error = summary["test_error"] if summary else epochs[-1]["test_error"]
        points.setdefault(epochs[0].get("method", "?"), []).append((k, 100.0 * error))
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, values in sorted(points.items()):
        values.sort()
        ax.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=method)
    ax.set_xlabel("largest allowed shift kmax (--qbp-kmax)")
    ax.set_ylabel("test error (%)")
    ax.set_title("Effect of limiting the exponent range")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main(argv):
    if len(argv) < 3 or argv[0] not in ("curves", "histogram", "kmax"):
        print(__doc__, file=sys.stderr)
        return 2
    command, out, inputs = argv[0], argv[1], argv[2:]
    if command == "curves":
        curves(out, inputs)
    elif command == "histogram":
        if len(inputs) != 1:
            fail("histogram takes one HIST.json")
        histogram(out, inputs[0])
    else:
        kmax(out, inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
