"""Map what from-scratch training on the split's photos can reach: accuracy against epochs,
augmentation, resolution, depth and the number of training photos, far past a CPU's budget.

Each run is the study's base recipe written out (ResNet18 from scratch, 96 px, 8 epochs, AdamW 0.002
with weight decay 0.05, one-cycle with a 1-epoch warmup, flips, batch 32, 4-flip TTA) with one
change. Every photo is decoded once and kept on the device as uint8; augmentation runs there too, so
a run on a GPU takes seconds and --workers runs share one GPU side by side. The base recipe runs in
the same grid with the most seeds: compare every row with it, not with figures from elsewhere.
Each finished run is appended to --out as one JSON line (a rerun skips the runs already there), and
the table printed at the end averages the seeds.

The "ideas" grid tries what costs nothing at the CPU budget: extra training targets read from each bin's
metadata (how many products it lists, log total volume, log total weight; never an input), SGD instead of
AdamW, a centre crop, and averaging two models.

Augmentations ("strong"): flips, transposes, zoom crops keeping 75-100 % of the side and shifts of
up to 10 % of the side, edge pixels repeated.

    python -m studies.recipes.scratch_map --split data/split --images data/raw/images --workers 6 [--grid all]
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

from binsight.data.image_datasets import IMAGENET_MEAN, IMAGENET_STD
from binsight.data.image_decode import load_rgb
from binsight.data.split_files import read_split
from binsight.model.aux_targets import read_aux_targets
from binsight.model.count_losses import standardizer

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
    "ideas": [  # cheap at the CPU budget: extra targets from the metadata, another optimizer, a crop
        ("base recipe (96 px, 8 epochs)", {}, 8),
        ("aux targets x0.5", {"aux": 0.5}, 8),
        ("aux targets x1", {"aux": 1.0}, 8),
        ("aux: product count only, x1", {"aux": 1.0, "aux_parts": "sku"}, 3),
        ("aux targets x1, 16 epochs", {"aux": 1.0, "epochs": 16}, 3),
        ("aux targets x1, strong aug, 32 epochs", {**STRONG, "aux": 1.0, "epochs": 32}, 2),
        ("SGD nesterov 0.05, wd 5e-4", {"opt": "sgd"}, 3),
        ("centre 80 % crop", {"crop": 0.8}, 3),
        ("2 models x 4 epochs, averaged", {"models": 2, "epochs": 4}, 3),
        ("2 models x 8 epochs, averaged", {"models": 2}, 3),
    ],
    "aux": [  # how much weight on the metadata targets, and which of them
        ("base recipe (96 px, 8 epochs)", {}, 8),
        ("aux targets x1", {"aux": 1.0}, 8),
        ("aux targets x2", {"aux": 2.0}, 6),
        ("aux targets x4", {"aux": 4.0}, 4),
        ("aux: volume and weight only, x1", {"aux": 1.0, "aux_parts": "measures"}, 4),
        ("12 epochs", {"epochs": 12}, 4),
        ("aux targets x1, 12 epochs", {"aux": 1.0, "epochs": 12}, 4),
    ],
}


def grid_jobs(names):
    """Every (row, seed) of the named grids as a job dict, the base recipe's seeds first."""
    rows = list({row[0]: row for name in names for row in GRIDS[name]}.values())  # a row in two grids runs once
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
        table.append(
            (
                row,
                len(runs),
                statistics.mean(r["val"] for r in runs),
                statistics.mean(r["test"] for r in runs),
                statistics.mean(both),
                se,
                statistics.mean(r["train_s"] for r in runs),
            )
        )
    return table


def load_split(split_dir, images, metadata, size, crop, device):
    out = {}
    for name in ("train", "val", "test"):
        rows = read_split(split_dir, name, images)
        pixels = []
        for bin_id, _ in rows:
            image = load_rgb(Path(images) / f"{bin_id}.jpg")
            if crop < 1:  # the centre of the photo, crop x crop of each side
                w, h = image.size
                image = image.crop(
                    (
                        round(w * (1 - crop) / 2),
                        round(h * (1 - crop) / 2),
                        round(w * (1 + crop) / 2),
                        round(h * (1 + crop) / 2),
                    )
                )
            pixels.append(np.asarray(image.resize((size, size), Image.BILINEAR)))
        aux = read_aux_targets(rows, metadata)
        out[name] = (
            torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous().to(device),
            torch.tensor([label - 1 for _, label in rows], device=device),
            torch.tensor(aux, dtype=torch.float32, device=device),
        )
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


def train_one(job, data, seed):
    """One model trained by the job's recipe; returns (model, the last batch's loss, train seconds)."""
    dev = data["train"][0].device
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tx, ty, taux = data["train"]
    if job.get("n_train"):
        tx, ty, taux = tx[: job["n_train"]], ty[: job["n_train"]], taux[: job["n_train"]]
    aux_mean, aux_std = (t.to(dev) for t in standardizer(taux))  # the regressions see z-scores
    aux = job.get("aux", 0.0)
    model = torchvision.models.get_model(job.get("arch", "resnet18"), num_classes=5 + (7 if aux else 0))
    model = model.to(dev, memory_format=torch.channels_last)
    bs, epochs = 32, job["epochs"]
    if job.get("opt") == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, opt.param_groups[0]["lr"], total_steps=epochs * (len(tx) // bs), pct_start=min(1 / epochs, 0.3)
    )  # 1 epoch: no zero-length anneal
    autocast = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    start = time.time()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(tx), device=dev)
        for i in range(len(tx) // bs):
            idx = perm[i * bs : (i + 1) * bs]
            x, y = augment(norm(tx[idx]), job).contiguous(memory_format=torch.channels_last), ty[idx]
            with torch.autocast(**autocast):
                if job.get("mixup"):
                    lam, other = float(rng.beta(job["mixup"], job["mixup"])), torch.randperm(len(x), device=dev)
                    logits = model(lam * x + (1 - lam) * x[other]).float()
                    loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[other])
                else:
                    out = model(x).float()
                    loss = F.cross_entropy(out[:, :5], y)
                    if aux:
                        a = taux[idx]
                        parts = job.get("aux_parts", "all")  # all | sku (products listed) | measures
                        extra = F.cross_entropy(out[:, 5:10], a[:, 0].long()) if parts != "measures" else 0.0
                        if parts != "sku":
                            target = (a[:, 1:] - aux_mean) / aux_std
                            known = ~target.isnan()
                            extra = extra + 0.5 * F.mse_loss(out[:, 10:][known], target[known])
                        loss = loss + aux * extra
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model, loss.item(), time.time() - start


def norm(x):
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255
    return ((x.float() - mean) / std).contiguous(memory_format=torch.channels_last)


def run(job, data):
    """Train job["models"] models (default 1) and score their averaged 4-flip TTA probabilities."""
    dev = data["train"][0].device
    autocast = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    probs = {"val": 0, "test": 0}
    train_s = 0.0
    for k in range(job.get("models", 1)):
        model, last_loss, seconds = train_one(job, data, seed=job["seed"] + 1000 * k)
        train_s += seconds
        model.eval()
        with torch.no_grad(), torch.autocast(**autocast):
            for split in probs:
                x = data[split][0]
                views = []
                for i in range(0, len(x), 256):
                    b = norm(x[i : i + 256])
                    views.append(
                        sum(model(v)[:, :5].float().softmax(1) for v in (b, b.flip(3), b.flip(2), b.flip(2).flip(3)))
                    )
                probs[split] = probs[split] + torch.cat(views)
    scores = {split: (p.argmax(1) == data[split][1]).float().mean().item() for split, p in probs.items()}
    return {**job, **scores, "train_s": round(train_s, 1), "final_loss": round(last_loss, 3)}


def worker(args, jobs, lock):
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    data = {}
    for job in iter(jobs.get, None):
        key = (job["size"], job.get("crop", 1.0))
        if key not in data:
            data[key] = load_split(args.split, args.images, args.metadata, *key, device)
        result = run(job, data[key])
        with lock, open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
        print(
            f"{result['row']} seed {result['seed']}: val {result['val']:.3f} test {result['test']:.3f} "
            f"({result['train_s']:.0f} s)",
            flush=True,
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="data/split", help="folder with train.csv, val.csv, test.csv")
    ap.add_argument("--images", default="data/raw/images", help="folder with <id>.jpg")
    ap.add_argument("--metadata", default="data/raw/metadata", help="folder with <id>.json (the aux targets)")
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
    print(
        f"{len(todo)} runs to go ({len(done)} already in {out}) on {args.device}, {args.workers} side by side",
        flush=True,
    )
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
