"""Map what from-scratch training on the split's photos can reach: accuracy against epochs,
augmentation, resolution, depth and the number of training photos, far past a CPU's budget.

Each run is the study's base recipe written out (ResNet18 from scratch, 96 px, 8 epochs, AdamW 0.002
with weight decay 0.05, one-cycle with a 1-epoch warmup, flips, batch 32, 4-flip TTA) with one
change. Every photo is decoded once and kept on the device as uint8; augmentation runs there too, so
a run on a GPU takes seconds and --workers runs share one GPU side by side. The base recipe runs in
the same grid with the most seeds: compare every row with it, not with figures from elsewhere.
Each finished run is appended to --out as one JSON line (a rerun skips the runs already there), and
the table printed at the end averages the seeds.

Augmentations ("strong"): flips, transposes, zoom crops keeping 75-100 % of the side and shifts of
up to 10 % of the side, edge pixels repeated.

    python bench/scratch_map.py --split data/split --images data/raw/images --workers 6 [--grid all]
"""
import argparse
import collections
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from binsight.images import load_rgb  # noqa: E402
from binsight.model import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from binsight.tables import read_split  # noqa: E402

STRONG = {"aug": "strong", "scale": 0.75, "shift": 0.1}
BASE = {"size": 96, "epochs": 8}
# grid -> [(row name, change to BASE, seeds)]
GRIDS = {
    "compute": [
        ("base recipe (96 px, 8 epochs)", {}, 6),
        ("16 epochs", {"epochs": 16}, 3),
        ("32 epochs", {"epochs": 32}, 3),
        ("64 epochs", {"epochs": 64}, 2),
        ("strong aug, 8 epochs", STRONG, 2),
        ("strong aug, 32 epochs", {**STRONG, "epochs": 32}, 3),
        ("strong aug, 64 epochs", {**STRONG, "epochs": 64}, 2),
        ("strong aug, 128 epochs", {**STRONG, "epochs": 128}, 1),
        ("strong aug + mixup 0.2, 32 epochs", {**STRONG, "epochs": 32, "mixup": 0.2}, 2),
        ("ResNet34, strong aug, 32 epochs", {**STRONG, "epochs": 32, "arch": "resnet34"}, 2),
    ],
    "resolution": [
        ("112 px, 6 epochs (the bare loop's size and length)", {"size": 112, "epochs": 6}, 2),
        ("112 px, 32 epochs", {"size": 112, "epochs": 32}, 2),
        ("224 px, 8 epochs", {"size": 224}, 2),
        ("160 px, strong aug, 32 epochs", {**STRONG, "size": 160, "epochs": 32}, 2),
        ("224 px, strong aug, 32 epochs", {**STRONG, "size": 224, "epochs": 32}, 2),
    ],
    "data": [  # about the steps of the base recipe on all 1,982 training photos (480-496 of batch 32)
        ("first 500 training photos, 32 epochs", {"n_train": 500, "epochs": 32}, 3),
        ("first 1,000 training photos, 16 epochs", {"n_train": 1000, "epochs": 16}, 3),
    ],
}


def grid_jobs(names):
    """Every (row, seed) of the named grids as a job dict, the base recipe's seeds first."""
    rows = [row for name in names for row in GRIDS[name]]
    return [{"row": row, **BASE, **change, "seed": seed} for row, change, seeds in rows for seed in range(seeds)]


def summarize(results):
    """Rows of (name, runs, val mean, test mean, mean of val and test, its standard error, train s)."""
    by_row = collections.defaultdict(list)
    for r in results:
        by_row[r["row"]].append(r)
    table = []
    for row, runs in by_row.items():
        both = [(r["val"] + r["test"]) / 2 for r in runs]
        se = statistics.stdev(both) / len(both) ** 0.5 if len(both) > 1 else float("nan")
        table.append((row, len(runs), statistics.mean(r["val"] for r in runs),
                      statistics.mean(r["test"] for r in runs), statistics.mean(both), se,
                      statistics.mean(r["train_s"] for r in runs)))
    return table


def load_split(split_dir, images, size, device):
    out = {}
    for name in ("train", "val", "test"):
        rows = read_split(split_dir, name, images)
        pixels = np.stack([np.asarray(load_rgb(Path(images) / f"{bin_id}.jpg").resize((size, size), Image.BILINEAR))
                           for bin_id, _ in rows])
        out[name] = (torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous().to(device),
                     torch.tensor([label - 1 for _, label in rows], device=device))
    return out


def augment(x, job):
    """Random flips; "strong" adds transposes, zoom crops and shifts through one affine warp."""
    n, dev = len(x), x.device
    fx = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
    fy = torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0)
    if job.get("aug", "flips") == "flips":
        x = torch.where((fx < 0).view(n, 1, 1, 1), x.flip(3), x)
        return torch.where((fy < 0).view(n, 1, 1, 1), x.flip(2), x)
    s = job["scale"] + (1 - job["scale"]) * torch.rand(n, device=dev)

    def offset():  # the crop's place inside the photo, plus the shift (both in [-1, 1] coordinates)
        return (1 - s) * (2 * torch.rand(n, device=dev) - 1) + 2 * job["shift"] * (2 * torch.rand(n, device=dev) - 1)
    turn = torch.rand(n, device=dev) < 0.5
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = torch.where(turn, 0.0, s * fx)
    theta[:, 0, 1] = torch.where(turn, s * fx, 0.0)
    theta[:, 1, 1] = torch.where(turn, 0.0, s * fy)
    theta[:, 1, 0] = torch.where(turn, s * fy, 0.0)
    theta[:, 0, 2], theta[:, 1, 2] = offset(), offset()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def run(job, data):
    dev = data["train"][0].device
    torch.manual_seed(job["seed"])
    rng = np.random.default_rng(job["seed"])
    tx, ty = data["train"]
    if job.get("n_train"):
        tx, ty = tx[:job["n_train"]], ty[:job["n_train"]]
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1) * 255

    def norm(x):
        return ((x.float() - mean) / std).contiguous(memory_format=torch.channels_last)
    model = torchvision.models.get_model(job.get("arch", "resnet18"), num_classes=5)
    model = model.to(dev, memory_format=torch.channels_last)
    bs, epochs = 32, job["epochs"]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * (len(tx) // bs),
                                                pct_start=1 / epochs)
    autocast = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    start = time.time()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(tx), device=dev)
        for i in range(len(tx) // bs):
            idx = perm[i * bs:(i + 1) * bs]
            x, y = augment(norm(tx[idx]), job).contiguous(memory_format=torch.channels_last), ty[idx]
            with torch.autocast(**autocast):
                if job.get("mixup"):
                    lam, other = float(rng.beta(job["mixup"], job["mixup"])), torch.randperm(len(x), device=dev)
                    logits = model(lam * x + (1 - lam) * x[other]).float()
                    loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[other])
                else:
                    loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    train_s = time.time() - start
    model.eval()
    scores = {}
    with torch.no_grad(), torch.autocast(**autocast):
        for split in ("val", "test"):
            x, y = data[split]
            probs = []
            for i in range(0, len(x), 256):
                b = norm(x[i:i + 256])
                probs.append(sum(model(v).float().softmax(1) for v in (b, b.flip(3), b.flip(2), b.flip(2).flip(3))))
            scores[split] = (torch.cat(probs).argmax(1) == y).float().mean().item()
    return {**job, **scores, "train_s": round(train_s, 1), "final_loss": round(loss.item(), 3)}


def worker(args, jobs, lock):
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    data = {}
    for job in iter(jobs.get, None):
        if job["size"] not in data:
            data[job["size"]] = load_split(args.split, args.images, job["size"], device)
        result = run(job, data[job["size"]])
        with lock, open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"{result['row']} seed {result['seed']}: val {result['val']:.3f} test {result['test']:.3f} "
              f"({result['train_s']:.0f} s)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="data/split", help="folder with train.csv, val.csv, test.csv")
    ap.add_argument("--images", default="data/raw/images", help="folder with <id>.jpg")
    ap.add_argument("--grid", nargs="+", default=["all"], choices=["all", *GRIDS], help="which rows to run")
    ap.add_argument("--workers", type=int, default=1, help="runs side by side (one process each)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per worker")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="scratch_map.jsonl", help="one JSON line per finished run")
    args = ap.parse_args()
    names = list(GRIDS) if "all" in args.grid else args.grid
    out = Path(args.out)
    done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    finished = {(r["row"], r["seed"]) for r in done}
    todo = [job for job in grid_jobs(names) if (job["row"], job["seed"]) not in finished]
    print(f"{len(todo)} runs to go ({len(done)} already in {out}) on {args.device}, {args.workers} side by side",
          flush=True)
    ctx = multiprocessing.get_context("spawn")  # CUDA in each worker needs spawned processes
    jobs, lock = ctx.Queue(), ctx.Lock()
    for job in todo + [None] * args.workers:
        jobs.put(job)
    procs = [ctx.Process(target=worker, args=(args, jobs, lock)) for _ in range(args.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        sys.exit("a worker failed: see its traceback above; finished runs are kept in " + str(out))
    results = [json.loads(line) for line in out.read_text().splitlines()]
    print(f"\n{'row':52s} runs   val   test  mean (se)       train s")
    for row, n, val, test, both, se, train_s in summarize(results):
        print(f"{row:52s} {n:4d} {val:.3f} {test:.3f}  {both:.3f} ({se:.3f}) {train_s:8.0f}")


if __name__ == "__main__":
    main()
