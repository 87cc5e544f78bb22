#!/usr/bin/python3
"""ctest: apps/scripts/plot.py draws each figure from the fixtures in tests/data/figures as a well-formed PNG and SVG.

Skips (exit 77) when matplotlib is not installed: the figures are optional."""
import os
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zlib

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
fixtures = os.path.join(root, "tests", "data", "figures")
plot = os.path.join(root, "apps", "scripts", "plot.py")

try:
    import matplotlib  # noqa: F401
except ImportError:
    print("skipped: python3-matplotlib is not installed (apt-get install python3-matplotlib)")
    sys.exit(77)


def check_png(path):
    """Signature, IHDR first with a positive size, every chunk's CRC, IEND last."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path + ": no PNG signature"
    pos, kinds = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, path + ": bad CRC in " + kind.decode()
        kinds.append(kind)
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
            assert width > 100 and height > 100, path + ": tiny image"
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds, path + ": chunks " + str(kinds)


def check_svg(path, words):
    tree = ET.parse(path)  # raises on malformed XML
    assert tree.getroot().tag.endswith("svg"), path + ": root is not <svg>"
    text = open(path).read()
    for w in words:
        assert w in text, path + ": no '" + w + "' in the figure"


def log(name):
    return os.path.join(fixtures, name)


figures = {
    "curves": ([log("bcqbp_k3.jsonl"), log("tcqbp_k3.jsonl")], ["Learning curves"]),
    "histogram": ([log("histogram.json")], ["Hidden representations"]),
    "kmax": (["3=" + log("bcqbp_k3.jsonl"), log("bcqbp_k1.jsonl")], ["exponent range"]),
}
with tempfile.TemporaryDirectory() as tmp:
    for command, (inputs, words) in figures.items():
        for ext in ("png", "svg"):
            out = os.path.join(tmp, command + "." + ext)
            subprocess.run([sys.executable, plot, command, out] + inputs, check=True)
            check_png(out) if ext == "png" else check_svg(out, words)
            print("ok", command, ext, os.path.getsize(out), "bytes")
    # Bad input fails with a message, not a traceback.
    bad = subprocess.run([sys.executable, plot, "curves", os.path.join(tmp, "x.png"), log("histogram.json")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no epoch lines" in bad.stderr, bad.stderr
print("all figures well-formed")
