#!/usr/bin/python3
"""Side-by-side training speed of fewmul and PyTorch on the papers' networks, in one run, on one CPU.

Suites (all by default, --suites to pick):
  mlp   MNIST MLP 784-1024x3-10 (BN, ReLU, batch 200, SGD, squared hinge): PyTorch fp32 and BinaryConnect
        emulated in float (stochastic +-1 weights sampled from clipped float masters each step, gradient
        straight to the master, clip after the update); fewmul fp32, bc, bc+qbp, tc+qbp.
  conv  CIFAR-10 convnet of the BNN paper (fewmul --convnet bnn: 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-1024FC-1024FC-10 times
        --width, conv -> [pool] -> BN -> ReLU, batch 200) at widths 0.25 and 0.5: PyTorch fp32 and
        BinaryConnect emulation on inputs of the data's shape (speed does not depend on the pixel values);
        fewmul fp32, bc, bc+qbp on the real CIFAR-10 files (`apps/scripts/fetch-data.sh cifar10`).
        Also batch-1 inference latency: PyTorch fp32 (best threads), fewmul fp32 and packed bc (one thread).
  bnn   BNN MLP 784-4096x3-10 (sign weights and sign activations with the straight-through estimator,
        BN, Adam, batch 200): PyTorch float emulation; fewmul bnn (XNOR-popcount forward).
  bnnconv  Inference of the BNN paper's CIFAR-10 convnet (2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-1024FC-1024FC-10,
        conv -> [pool] -> BN -> activation) at widths 0.5 and 1, batch 1 and 256: PyTorch fp32 (eval mode,
        no_grad, best threads) against fewmul_bench's inference_convnet rows (fp32 network, BNN network with
        float activations, packed_network with bit planes end to end), all on inputs in [-1, 1]; fewmul_bench
        runs before and after PyTorch and the faster time of each row counts.
PyTorch gets its best thread setting: OpenMP (torch.set_num_threads) and BLAS threads oversubscribe each
other on few cores, so every combination of 1, 2 and all cores runs in its own process and the fastest
counts. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some machines for old OpenBLAS builds, which they hold
to an older kernel) are removed from PyTorch's environment. fewmul uses all cores. Prints one Markdown
table of images/s and ratios, naming the CPU.

Usage: /usr/bin/python3 bench/peer_pytorch.py [--fewmul build/fewmul] [--mnist build/data/mnist]
           [--cifar build/data/cifar10] [--suites mlp,conv,bnn,bnnconv]
Needs Debian's python3-torch.
"""
import argparse
import itertools
import json
import os
import platform
import struct
import subprocess
import sys
import time


def load_idx(path):
    import torch
    with open(path, "rb") as f:
        data = bytearray(f.read())
    magic, count = struct.unpack(">II", data[:8])
    if magic == 0x803:
        rows, cols = struct.unpack(">II", data[8:16])
        return torch.frombuffer(data, dtype=torch.uint8, offset=16).reshape(count, rows * cols)
    if magic == 0x801:
        return torch.frombuffer(data, dtype=torch.uint8, offset=8)
    raise SystemExit(f"{path}: not an IDX file (magic {magic:#x})")


def cpu_name():
    family = model = name = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and not name:
                    name = value
                elif key == "cpu family" and not family:
                    family = value
                elif key == "model" and not model:
                    model = value
    except OSError:
        return platform.processor() or "unknown CPU"
    return f"{name} (family {family}, model {model})"


def torch_inference_worker(args):
    """fp32 inference of the BNN convnet's architecture at batch 1 and 256; prints one JSON line."""
    import torch
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(1)
    scaled = lambda n: max(1, round(n * args.width))
    layers, channels = [], 3
    for i, out in enumerate([128, 128, 0, 256, 256, 0, 512, 512, 0]):
        if out == 0:
            continue
        layers.append(torch.nn.Conv2d(channels, scaled(out), 3, padding=1, bias=False))
        channels = scaled(out)
        if i in (1, 4, 7):
            layers.append(torch.nn.MaxPool2d(2))
        layers += [torch.nn.BatchNorm2d(channels, eps=1e-4), torch.nn.Hardtanh()]
    layers.append(torch.nn.Flatten())
    sizes = [channels * 16, scaled(1024), scaled(1024), 10]
    for i in range(len(sizes) - 1):
        layers += [torch.nn.Linear(sizes[i], sizes[i + 1], bias=False), torch.nn.BatchNorm1d(sizes[i + 1], eps=1e-4)]
        if i < len(sizes) - 2:
            layers.append(torch.nn.Hardtanh())
    net = torch.nn.Sequential(*layers).eval()
    result = {}
    with torch.no_grad():
        for batch, runs in ((1, 30), (256, 2)):
            x = torch.rand(batch, 3, 32, 32) * 2 - 1
            net(x)
            start = time.perf_counter()
            for _ in range(runs):
                net(x)
            result[f"batch{batch}_ms"] = (time.perf_counter() - start) / runs * 1e3
    result["images_per_s"] = 256 / result["batch256_ms"] * 1e3
    print(json.dumps(result))


def torch_worker(args):
    """Runs in a child process with the thread environment already set; prints one JSON line."""
    import torch
    if args.net == "bnnconv":
        return torch_inference_worker(args)
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(1)

    def ste_sign(v):
        # sign in the forward pass, the hard-tanh gradient (1 where |v| <= 1) in the backward pass
        clipped = v.clamp(-1, 1)
        return clipped + (torch.where(v >= 0, 1.0, -1.0) - clipped).detach()

    class BinaryLinear(torch.nn.Linear):
        """Binary weights emulated in float: stochastic (bc) or sign (bnn), gradient straight to W."""
        def forward(self, inp):
            w = self.weight.clamp(-1, 1)
            if args.mode == "bnn":
                wb = torch.where(w >= 0, 1.0, -1.0)
            else:
                wb = torch.where(torch.rand_like(w) < (w + 1) / 2, 1.0, -1.0)
            return torch.nn.functional.linear(inp, w + (wb - w).detach())

    class BinaryConv(torch.nn.Conv2d):
        def forward(self, inp):
            w = self.weight.clamp(-1, 1)
            wb = torch.where(torch.rand_like(w) < (w + 1) / 2, 1.0, -1.0)
            return self._conv_forward(inp, w + (wb - w).detach(), None)

    class Sign(torch.nn.Module):
        def forward(self, v):
            return ste_sign(v)

    binary = args.mode in ("bc", "bnn")
    linear = BinaryLinear if binary else torch.nn.Linear
    if args.net == "conv":
        width = args.width
        scaled = lambda n: max(1, round(n * width))
        conv = BinaryConv if binary else torch.nn.Conv2d
        layers, channels = [], 3
        for i, out in enumerate([128, 128, 0, 256, 256, 0, 512, 512, 0]):
            if out == 0:
                continue
            layers.append(conv(channels, scaled(out), 3, padding=1, bias=False))
            channels = scaled(out)
            if i in (1, 4, 7):
                layers.append(torch.nn.MaxPool2d(2))
            layers += [torch.nn.BatchNorm2d(channels, eps=1e-4), torch.nn.ReLU()]
        layers.append(torch.nn.Flatten())
        sizes = [channels * 16, scaled(1024), scaled(1024), 10]
        x = torch.randn(args.images, 3, 32, 32)
        y = torch.randint(0, 10, (args.images,))
    else:
        hidden = 4096 if args.mode == "bnn" else 1024
        sizes = [784, hidden, hidden, hidden, 10]
        layers = []
        x = load_idx(os.path.join(args.data, "train-images-idx3-ubyte"))[: args.images].float() / 255.0
        y = load_idx(os.path.join(args.data, "train-labels-idx1-ubyte"))[: args.images].long()
    for i in range(len(sizes) - 1):
        layers += [linear(sizes[i], sizes[i + 1], bias=False), torch.nn.BatchNorm1d(sizes[i + 1], eps=1e-4)]
        if i < len(sizes) - 2:
            layers.append(Sign() if args.mode == "bnn" else torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    if args.mode == "bnn":
        opt = torch.optim.Adam(net.parameters(), lr=0.003)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.3 if args.mode == "fp32" else 1.0)
    targets = -torch.ones(len(y), 10)
    targets[torch.arange(len(y)), y] = 1.0
    batch = 200

    def step(b):
        xb, tb = x[b * batch:(b + 1) * batch], targets[b * batch:(b + 1) * batch]
        loss = torch.clamp(1 - tb * net(xb), min=0).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if binary:
            with torch.no_grad():
                for m in net:
                    if isinstance(m, (BinaryLinear, BinaryConv)):
                        m.weight.clamp_(-1, 1)

    batches = len(y) // batch
    for b in range(2):  # warm-up
        step(b)
    start = time.perf_counter()
    for b in range(batches):
        step(b)
    result = {"images_per_s": batches * batch / (time.perf_counter() - start)}
    if args.net == "mlp" and args.mode == "fp32":  # batch-1 inference latency of the trained MLP
        net.eval()
        with torch.no_grad():
            for _ in range(20):
                net(x[:1])
            runs = 300
            start = time.perf_counter()
            for _ in range(runs):
                net(x[:1])
            result["batch1_us"] = (time.perf_counter() - start) / runs * 1e6
    print(json.dumps(result))


def run_torch(args, net, mode, width, images, torch_threads, blas_threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(torch_threads), OPENBLAS_NUM_THREADS=str(blas_threads),
               MKL_NUM_THREADS=str(blas_threads))
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    cmd = [sys.executable, __file__, "--worker", "--net", net, "--mode", mode, "--width", str(width),
           "--torch-threads", str(torch_threads), "--mnist", args.mnist, "--images", str(images)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"PyTorch worker failed ({net} {mode}, {torch_threads}/{blas_threads} threads):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_torch(args, net, mode, width, images):
    """(images/s, thread setting, batch-1 latency in us or None) of the fastest thread setting."""
    cores = os.cpu_count() or 1
    counts = sorted({1, 2, cores} & set(range(1, cores + 1)))
    best = None
    for t, b in itertools.product(counts, counts):
        r = run_torch(args, net, mode, width, images, t, b)
        print(f"pytorch {net} {mode} width {width}: torch threads {t}, BLAS threads {b}: {r['images_per_s']:.0f} "
              "images/s", file=sys.stderr)
        if best is None or r["images_per_s"] > best[0]:
            best = (r["images_per_s"], f"{t}/{b}", r.get("batch1_us"))
    return best


def run_fewmul_latency(args):
    """Batch-1 inference latency (us, one thread) of the MNIST MLP: fp32 and packed bc, from fewmul_bench."""
    bench = os.path.join(os.path.dirname(args.fewmul), "fewmul_bench")
    cmd = [bench, "--benchmark_filter=^inference/(fp32|bc)/1/1$", "--benchmark_format=json",
           "--benchmark_min_time=0.3"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"fewmul_bench failed:\n{out.stderr}")
    rows = json.loads(out.stdout)["benchmarks"]
    return {r["name"].split("/")[1]: r["real_time"] for r in rows}


def best_torch_inference(args, width):
    """{batch: (ms per batch, thread setting)} of the fastest thread setting for each batch size."""
    cores = os.cpu_count() or 1
    counts = sorted({1, 2, cores} & set(range(1, cores + 1)))
    best = {}
    for t, b in itertools.product(counts, counts):
        r = run_torch(args, "bnnconv", "fp32", width, 0, t, b)
        print(f"pytorch bnnconv width {width}: torch threads {t}, BLAS threads {b}: batch 1 {r['batch1_ms']:.2f} ms, "
              f"batch 256 {r['batch256_ms']:.0f} ms", file=sys.stderr)
        for batch in (1, 256):
            ms = r[f"batch{batch}_ms"]
            if batch not in best or ms < best[batch][0]:
                best[batch] = (ms, f"{t}/{b}")
    return best


def run_fewmul_convnet_inference(args):
    """{(width %, batch, variant): ms per batch} of fewmul_bench's inference_convnet rows (all cores)."""
    bench = os.path.join(os.path.dirname(args.fewmul), "fewmul_bench")
    cmd = [bench, "--benchmark_filter=^inference_convnet/", "--benchmark_format=json", "--benchmark_min_time=0.2"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"fewmul_bench failed:\n{out.stderr}")
    result = {}
    for r in json.loads(out.stdout)["benchmarks"]:
        parts = dict(p.split(":") for p in r["name"].split("/")[2:] if ":" in p)
        ms = r["real_time"] if r["time_unit"] == "ms" else r["real_time"] / 1e3
        result[(int(parts["width_pct"]), int(parts["batch"]), r["name"].split("/")[1])] = ms
    return result


def run_fewmul(args, dataset, method, images, extra=()):
    data = args.mnist if dataset == "mnist" else args.cifar
    cmd = [args.fewmul, "train", dataset, "--method", method, "--epochs", "1", "--data", data, "--batch", "200",
           "--train-limit", str(images + 1000), "--validation", "1000", "--bn-reestimate", "0", "--quiet", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"fewmul failed: {' '.join(cmd)}\n{out.stderr}")
    rate = json.loads(out.stdout.strip().splitlines()[0])["images_per_s"]
    print(f"fewmul {dataset} {method} {' '.join(extra)}: {rate:.0f} images/s", file=sys.stderr)
    return rate


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fewmul", default="build/fewmul")
    p.add_argument("--mnist", default="build/data/mnist")
    p.add_argument("--cifar", default="build/data/cifar10")
    p.add_argument("--suites", default="mlp,conv,bnn,bnnconv")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--net", default="mlp", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--width", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--images", type=int, default=6000, help=argparse.SUPPRESS)
    p.add_argument("--torch-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.data = args.mnist
        return torch_worker(args)

    suites = args.suites.split(",")
    rows = []  # (network, run, images/s, reference images/s of PyTorch fp32, of PyTorch emulation)
    latency = {}

    def suite(network, torch_net, width, images, fewmul_dataset, fewmul_methods, emulation, extra=()):
        fp32 = best_torch(args, torch_net, "fp32", width, images) if emulation != "bnn" else None
        emu = best_torch(args, torch_net, emulation, width, images)
        if fp32:
            rows.append((network, f"PyTorch fp32 (best torch/BLAS threads {fp32[1]})", fp32[0], fp32[0], emu[0]))
            if fp32[2] is not None:
                latency["PyTorch fp32 (best threads)"] = fp32[2]
        name = "BNN" if emulation == "bnn" else "BinaryConnect"
        rows.append((network, f"PyTorch {name} emulation (best {emu[1]})", emu[0], fp32[0] if fp32 else None, emu[0]))
        for method in fewmul_methods:
            rate = run_fewmul(args, fewmul_dataset, method, images, extra)
            rows.append((network, f"fewmul {method}", rate, fp32[0] if fp32 else None, emu[0]))

    if "mlp" in suites:
        suite("MNIST MLP 784-1024x3-10", "mlp", 1.0, 6000, "mnist", ["fp32", "bc", "bc+qbp", "tc+qbp"], "bc")
        fewmul_latency = run_fewmul_latency(args)
        latency["fewmul fp32, 1 thread"] = fewmul_latency["fp32"]
        latency["fewmul bc (packed +-1 weights), 1 thread"] = fewmul_latency["bc"]
    if "conv" in suites:
        for width in (0.25, 0.5):
            suite(f"CIFAR-10 convnet, width {width}", "conv", width, 1000, "cifar10", ["fp32", "bc", "bc+qbp"], "bc",
                  ("--width", str(width), "--convnet", "bnn"))
    if "bnn" in suites:
        suite("BNN MLP 784-4096x3-10", "mlp", 1.0, 2000, "mnist", ["bnn"], "bnn")

    inference_rows = []  # (width, batch, run, ms per batch, PyTorch fp32 ms)
    if "bnnconv" in suites:
        # fewmul's rows run before and after PyTorch's and the faster of the two counts, as PyTorch's best
        # thread setting does: on a shared machine a load spike then hits neither side alone.
        fewmul_rows = run_fewmul_convnet_inference(args)
        torch_best = {width: best_torch_inference(args, width) for width in (0.5, 1.0)}
        fewmul_rows = {key: min(ms, fewmul_rows[key]) for key, ms in run_fewmul_convnet_inference(args).items()}
        for width in (0.5, 1.0):
            for batch in (1, 256):
                reference, threads = torch_best[width][batch]
                inference_rows.append((width, batch, f"PyTorch fp32 (best torch/BLAS threads {threads})", reference,
                                       reference))
                for variant, name in (("fp32", "fewmul fp32"), ("bnn_network", "fewmul BNN, float activations"),
                                      ("bnn_packed", "fewmul BNN packed_network (bits end to end)")):
                    ms = fewmul_rows[(round(width * 100), batch, variant)]
                    inference_rows.append((width, batch, name, ms, reference))

    cores = os.cpu_count() or 1
    if inference_rows:
        print(f"\nBNN CIFAR-10 convnet inference, {cores} cores of {cpu_name()}\n")
        print("| width | batch | run | ms per batch | images/s | vs PyTorch fp32 |")
        print("| --- | --- | --- | --- | --- | --- |")
        for width, batch, run, ms, reference in inference_rows:
            print(f"| {width} | {batch} | {run} | {ms:.2f} | {batch / ms * 1e3:,.0f} | {reference / ms:.1f}x |")
    if not rows:
        return
    print(f"\nTraining images/s, batch 200, {cores} cores of {cpu_name()}\n")
    print("| network | run | images/s | vs PyTorch fp32 | vs PyTorch emulation |")
    print("| --- | --- | --- | --- | --- |")
    for network, run, rate, fp32, emu in rows:
        vs_fp32 = f"{rate / fp32:.2f}x" if fp32 else "—"
        print(f"| {network} | {run} | {rate:,.0f} | {vs_fp32} | {rate / emu:.2f}x |")
    if latency:
        reference = latency["PyTorch fp32 (best threads)"]
        print("\n| batch-1 inference, MNIST MLP | latency (us) | PyTorch fp32 / this |")
        print("| --- | --- | --- |")
        for run, us in latency.items():
            print(f"| {run} | {us:.0f} | {reference / us:.2f}x |")


if __name__ == "__main__":
    main()
