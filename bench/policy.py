"""Does training on more bins than the evaluation subset help? The class policies side by side on real
bins, through the product's own stages, with several seeds; also the shard data path against the
per-file one at the same recipe and split. Writes docs/policy.md.

    python bench/policy.py --bins ../abid/dev ../abid/dev-extra --seeds 0 1

`--bins`: local copies of the bucket (bin-images/, metadata/), merged (symlinks) into one; the first
holds the subset's 1-5 bins, the others bins with other counts. The list comes from `binsight list`
over the merged copy. Every arm trains `binsight recipe cpu-scratch` (from scratch, sized for a CPU)
with split seed 42 and is scored on the same test bins with 1-5 items: the classes are split one by
one, so adding bins of other counts leaves the 1-5 bins' split unchanged.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from binsight.recipes import overrides  # noqa: E402

ARMS = {
    "1-5 only (subset), per-file": {"classes.policy": "subset", "train.data": "files"},
    "1-5 only (subset), shards": {"classes.policy": "subset", "train.data": "shards"},
    "all bins (clip at 6: 0..5, 6+), per-file": {"classes.policy": "clip", "classes.clip_at": 6, "train.data": "files"},
    "0-5 (anchors), per-file": {"classes.policy": "anchors", "train.data": "files"},
}


def set_key(params, dotted, value):
    node = params
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def merge(folders, out):
    for sub in ("bin-images", "metadata"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for folder in folders:
            for f in (Path(folder) / sub).iterdir():
                link = out / sub / f.name
                if not link.exists():
                    link.symlink_to(f.resolve())


def stage(project, module, *args):
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(project)},
    )
    if out.returncode:
        raise SystemExit(f"{module} failed in {project}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.perf_counter() - start, out.stdout


def make_project(root, name, file_list, local_dir, settings):
    project = root / name
    subprocess.run(["git", "clone", "-q", str(REPO), str(project)], check=True)
    params = yaml.safe_load((project / "params.yaml").read_text())
    for key, value in {**overrides("cpu-scratch"), **settings}.items():
        set_key(params, key, value)
    set_key(params, "fetch.file_list", str(file_list))
    set_key(params, "fetch.local_dir", str(local_dir))
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project, params


def run_arm(root, name, settings, file_list, local_dir, seeds):
    project, params = make_project(root, f"arm{len(list(root.iterdir()))}", file_list, local_dir, settings)
    stage(project, "stages.fetch", "--no-progress")
    stage(project, "stages.split")
    shard_s = stage(project, "stages.shard", "--no-progress")[0] if settings["train.data"] == "shards" else 0.0
    results = []
    for seed in seeds:
        params["train"]["seed"] = seed
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for leftover in ("models/checkpoint.pt", "models/model.pt"):
            (project / leftover).unlink(missing_ok=True)
        shutil.rmtree(project / "dvclive", ignore_errors=True)
        train_s, _ = stage(project, "stages.train")
        stage(project, "stages.evaluate")
        m = json.loads((project / "dvclive/evaluate/metrics.json").read_text())["test"]
        train_n = sum(1 for _ in open(project / "data/split/train.csv")) - 1
        results.append(
            {
                "seed": seed,
                "train_s": train_s,
                "shard_s": shard_s,
                "train_bins": train_n,
                "acc": m["accuracy"],
                "n": m["n"],
                "acc15": m["capstone"]["accuracy"],
                "acc15_argmax15": m["capstone"]["accuracy_argmax_1to5"],
                "n15": m["capstone"]["n"],
            }
        )
        print(name, results[-1], flush=True)
    return results


def spread(values):
    return f"{statistics.mean(values):.1%} ({', '.join(f'{v:.1%}' for v in values)})"


def table(results, seeds, commit, command):
    lines = [
        "# Class policies and the shard path on real bins",
        "",
        f"Measured {datetime.date.today()} at commit {commit} on {os.cpu_count()} CPU cores with",
        f"`{command}`. Recipe: `binsight recipe cpu-scratch` (from scratch), split seed 42, train seeds "
        f"{', '.join(map(str, seeds))}. Every arm is scored on the same test bins with 1-5 items.",
        "",
        "| arm | train bins | test acc, 1-5 bins (argmax over all classes) | argmax over 1-5 only | "
        "test acc, all its test bins | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        lines.append(
            f"| {name} | {rows[0]['train_bins']} | {spread([r['acc15'] for r in rows])} | "
            f"{spread([r['acc15_argmax15'] for r in rows])} | {spread([r['acc'] for r in rows])} "
            f"(n={rows[0]['n']}) | {statistics.mean(r['train_s'] for r in rows):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bins", nargs="+", required=True, help="local copies of the bucket to merge")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), help="which arms (default: all)")
    parser.add_argument("--out", default=str(REPO / "docs" / "policy.md"))
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    root = Path(tempfile.mkdtemp(prefix="binsight-policy-"))
    merged = root / "bucket"
    merge(args.bins, merged)
    arms_root = root / "arms"
    arms_root.mkdir()
    stage(REPO, "binsight.listing", str(merged), "--out", str(root / "all_bins.json"), "--no-progress")
    report = json.loads((root / "all_bins.report.json").read_text())
    print("list:", report["listed"], "bins", report["bins_per_count"], "skipped", report["skipped_reasons"])
    results = {
        name: run_arm(arms_root, name, ARMS[name], root / "all_bins.json", merged, args.seeds) for name in args.arms
    }
    command = (
        "python bench/policy.py --bins "
        + " ".join(Path(b).name for b in args.bins)
        + " --seeds "
        + " ".join(map(str, args.seeds))
    )
    # Arms run at another time keep their rows: the JSON beside the page holds every arm's runs.
    store = Path(args.out).with_suffix(".json")
    kept = json.loads(store.read_text()) if store.exists() else {}
    results = {**kept, **results}
    store.write_text(json.dumps(results, indent=1) + "\n")
    text = table({name: results[name] for name in ARMS if name in results}, args.seeds, commit, command)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
