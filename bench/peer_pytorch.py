#!/usr/bin/python3
"""Side-by-side comparison of fewmul with PyTorch on the paper's MNIST MLP, in one run.

Trains 784-1024-1024-1024-10 (batch norm, ReLU, batch 200, SGD without momentum, squared hinge loss) on
the real MNIST training images with
  * PyTorch fp32,
  * PyTorch BinaryConnect by float emulation (stochastic +-1 weights sampled from clipped float master
    weights each step, straight-through gradient to the master, clip after the update),
  * fewmul fp32 and bc+qbp (the same network; `fewmul train mnist`),
and times batch-1 inference. PyTorch gets its best thread setting: OpenMP (torch.set_num_threads) and
OpenBLAS threads oversubscribe each other on few cores, so every combination up to the core count runs
in its own process and the fastest counts. Prints a Markdown table with images/s and ratios.

Usage: /usr/bin/python3 bench/peer_pytorch.py [--fewmul build/fewmul] [--data build/data/mnist] [--images 6000]
Needs Debian's python3-torch.
"""
import argparse
import itertools
import json
import os
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


def torch_worker(args):
    """Runs in a child process with the thread environment already set; prints one JSON line."""
    import torch
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(1)
    x = load_idx(os.path.join(args.data, "train-images-idx3-ubyte"))[: args.images].float() / 255.0
    y = load_idx(os.path.join(args.data, "train-labels-idx1-ubyte"))[: args.images].long()

    class BinaryLinear(torch.nn.Linear):
        """BinaryConnect emulated in float: W_b ~ P(+1) = (W + 1) / 2, gradient straight to W."""
        def forward(self, inp):
            w = self.weight.clamp(-1, 1)
            wb = torch.where(torch.rand_like(w) < (w + 1) / 2, 1.0, -1.0)
            return torch.nn.functional.linear(inp, w + (wb - w).detach())

    linear = BinaryLinear if args.mode == "bc" else torch.nn.Linear
    sizes = [784, 1024, 1024, 1024, 10]
    layers = []
    for i in range(4):
        layers += [linear(sizes[i], sizes[i + 1], bias=False), torch.nn.BatchNorm1d(sizes[i + 1], eps=1e-4)]
        if i < 3:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=0.3 if args.mode == "fp32" else 1.0)
    targets = -torch.ones(len(y), 10)
    targets[torch.arange(len(y)), y] = 1.0

    def step(b):
        xb, tb = x[b * 200:(b + 1) * 200], targets[b * 200:(b + 1) * 200]
        loss = torch.clamp(1 - tb * net(xb), min=0).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if args.mode == "bc":
            with torch.no_grad():
                for m in net:
                    if isinstance(m, BinaryLinear):
                        m.weight.clamp_(-1, 1)

    batches = len(y) // 200
    for b in range(3):  # warm-up
        step(b)
    start = time.perf_counter()
    for b in range(batches):
        step(b)
    train_ips = batches * 200 / (time.perf_counter() - start)

    net.eval()
    one = x[:1]
    with torch.no_grad():
        for _ in range(20):
            net(one)
        runs = 300
        start = time.perf_counter()
        for _ in range(runs):
            net(one)
        latency_us = (time.perf_counter() - start) / runs * 1e6
    print(json.dumps({"images_per_s": train_ips, "batch1_us": latency_us}))


def run_torch(args, mode, torch_threads, blas_threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(torch_threads), OPENBLAS_NUM_THREADS=str(blas_threads),
               MKL_NUM_THREADS=str(blas_threads))
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--torch-threads", str(torch_threads),
           "--data", args.data, "--images", str(args.images)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"PyTorch worker failed ({mode}, {torch_threads}/{blas_threads} threads):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_fewmul_train(args, method):
    cmd = [args.fewmul, "train", "mnist", "--method", method, "--epochs", "1", "--data", args.data,
           "--train-limit", str(args.images + 1000), "--validation", "1000", "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"fewmul failed: {' '.join(cmd)}\n{out.stderr}")
    epoch = json.loads(out.stdout.strip().splitlines()[0])
    return epoch["images_per_s"]


def run_fewmul_latency(args):
    bench = os.path.join(os.path.dirname(args.fewmul), "fewmul_bench")
    cmd = [bench, "--benchmark_filter=^inference/(fp32|bc)/1/1$", "--benchmark_format=json",
           "--benchmark_min_time=0.3"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"fewmul_bench failed:\n{out.stderr}")
    rows = json.loads(out.stdout)["benchmarks"]
    return {r["name"].split("/")[1]: r["real_time"] for r in rows}  # microseconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fewmul", default="build/fewmul")
    p.add_argument("--data", default="build/data/mnist")
    p.add_argument("--images", type=int, default=6000, help="training images timed per run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--torch-threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return torch_worker(args)

    cores = os.cpu_count() or 1
    counts = sorted({1, 2, cores} & set(range(1, cores + 1)))
    best = {}
    for mode in ("fp32", "bc"):
        for t, b in itertools.product(counts, counts):
            r = run_torch(args, mode, t, b)
            print(f"pytorch {mode}: torch threads {t}, BLAS threads {b}: {r['images_per_s']:.0f} images/s, "
                  f"batch-1 {r['batch1_us']:.0f} us", file=sys.stderr)
            if mode not in best or r["images_per_s"] > best[mode]["images_per_s"]:
                best[mode] = dict(r, setting=f"{t}/{b}")
    fewmul_fp32 = run_fewmul_train(args, "fp32")
    fewmul_bcqbp = run_fewmul_train(args, "bc+qbp")
    latency = run_fewmul_latency(args)

    print(f"\nMNIST MLP 784-1024-1024-1024-10, batch 200, {args.images} training images timed, {cores} cores\n")
    print("| run | images/s | fewmul bc+qbp is |")
    print("| --- | --- | --- |")
    print(f"| PyTorch fp32 (best threads {best['fp32']['setting']} torch/BLAS) | {best['fp32']['images_per_s']:,.0f} | "
          f"{fewmul_bcqbp / best['fp32']['images_per_s']:.2f}x |")
    print(f"| PyTorch BinaryConnect emulation (best {best['bc']['setting']}) | {best['bc']['images_per_s']:,.0f} | "
          f"{fewmul_bcqbp / best['bc']['images_per_s']:.2f}x |")
    print(f"| fewmul fp32 | {fewmul_fp32:,.0f} | {fewmul_bcqbp / fewmul_fp32:.2f}x |")
    print(f"| fewmul bc+qbp | {fewmul_bcqbp:,.0f} | 1x |")
    print("\n| batch-1 inference | latency (us) | PyTorch fp32 / this |")
    print("| --- | --- | --- |")
    print(f"| PyTorch fp32 (best threads) | {best['fp32']['batch1_us']:.0f} | 1x |")
    print(f"| fewmul fp32, 1 thread | {latency['fp32']:.0f} | {best['fp32']['batch1_us'] / latency['fp32']:.2f}x |")
    print(f"| fewmul bc (packed), 1 thread | {latency['bc']:.0f} | {best['fp32']['batch1_us'] / latency['bc']:.2f}x |")


if __name__ == "__main__":
    main()
