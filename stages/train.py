"""Stage `train`: fit the counting model on data/split/train.csv, pick the best epoch on val.

    python -m stages.train                                # what `dvc repro train` runs
    torchrun --nproc_per_node=4 -m stages.train           # DDP by hand (or set train.distributed)

Outputs: models/model.pt (best val accuracy: weights + what rebuilds them), models/checkpoint.pt
(last epoch, to resume a killed run), dvclive/train/ (params, per-epoch metrics and plots).
"""
import argparse
import contextlib
import copy
import json
import math
import os
import sys
from pathlib import Path

import torch
from dvclive import Live
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stages.checkpoint import fingerprint, load_resumable, save_checkpoint
from stages.data import BinImages, eval_transform, make_loader, read_split, train_transform
from stages.distributed import ShardSampler, init_world, torchrun_command, under_torchrun
from stages.engine import amp_dtype, evaluate_split, pick_device, seed_everything, train_one_epoch
from stages.errors import BinsightError, ConfigError, one_line_errors
from stages.features import FeatureBatches, cached_features
from stages.model import model_from_params, save_model
from stages.params import check_model, check_train, load_params, section
from stages.profiling import StepProfiler

COLLAPSE_EPOCHS = 2  # warn when val predictions are all one class this many epochs in a row
LOADER_BOUND = 0.5   # warn when the loop waits for data more than this fraction of an epoch


class TrainingDiverged(BinsightError):
    pass


def make_optimizer(model, tp):
    if model.freeze_backbone:
        groups = [{"params": model.head.parameters(), "lr": tp["lr"]}]
    else:
        groups = [{"params": model.backbone.parameters(), "lr": tp["backbone_lr"] or tp["lr"]},
                  {"params": model.head.parameters(), "lr": tp["lr"]}]
    if tp["optimizer"] == "sgd":
        return torch.optim.SGD(groups, momentum=tp["momentum"], weight_decay=tp["weight_decay"])
    cls = torch.optim.AdamW if tp["optimizer"] == "adamw" else torch.optim.Adam
    return cls(groups, weight_decay=tp["weight_decay"])


def make_scheduler(optimizer, tp):
    if tp["scheduler"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tp["epochs"])
    if tp["scheduler"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=tp["step_size"], gamma=tp["gamma"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def collapse_streak(streak, pred_hist):
    """Epochs in a row whose val predictions all fell in one class (the notebook's silent failure)."""
    return streak + 1 if sum(1 for n in pred_hist if n) == 1 else 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", default="data/split", help="folder with train.csv and val.csv")
    parser.add_argument("--images", default="data/raw/images")
    parser.add_argument("--model", default="models/model.pt", help="best model (default: %(default)s)")
    parser.add_argument("--checkpoint", default="models/checkpoint.pt", help="resumable state (default: %(default)s)")
    parser.add_argument("--live", default="dvclive/train", help="dvclive folder (default: %(default)s)")
    parser.add_argument("--features", default="data/features", help="featurize's cached embeddings, used when "
                        "valid and train.use_features is auto (default: %(default)s)")
    return parser.parse_args(argv)


@one_line_errors
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    params = load_params(args.params)
    mp, tp = section(params, "model", check_model), section(params, "train", check_train)
    dp = tp["distributed"]
    if not under_torchrun():
        if dp["nnodes"] > 1:
            raise ConfigError(f"train.distributed.nnodes={dp['nnodes']}: start `torchrun --nnodes={dp['nnodes']} "
                              f"--nproc_per_node={dp['nproc_per_node']} --rdzv-backend=c10d "
                              "--rdzv-endpoint=HOST:29400 -m stages.train` on every node")
        if dp["nproc_per_node"] > 1:
            cmd = torchrun_command(dp["nproc_per_node"], "stages.train", argv)
            print(f"train: launching {dp['nproc_per_node']} processes: {' '.join(cmd[1:])}", flush=True)
            os.execv(sys.executable, cmd)
    world = init_world(dp["backend"])
    try:
        fit(args, mp, tp, world)
    finally:
        world.close()


def fit(args, mp, tp, world):
    say = print if world.is_main else (lambda *a, **k: None)
    train_rows = read_split(args.split, "train", args.images)
    val_rows = read_split(args.split, "val", args.images)
    classes = sorted({label for _, label in train_rows + val_rows})

    seed_everything(tp["seed"])  # the same initial weights on every rank
    device = torch.device("cuda", world.local_rank) if world.enabled and torch.cuda.is_available() else pick_device()
    dtype = amp_dtype(tp["amp"], device)
    channels_last = tp["channels_last"] and device.type == "cuda"
    model = model_from_params(mp, len(classes)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, tp)
    scheduler = make_scheduler(optimizer, tp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    criterion = nn.CrossEntropyLoss(label_smoothing=tp["label_smoothing"])

    size, pin = tp["image_size"], tp["pin_memory"] and device.type == "cuda"
    train_sampler = ShardSampler(len(train_rows), world.rank, world.world_size, shuffle=True, seed=tp["seed"])
    val_sampler = ShardSampler(len(val_rows), world.rank, world.world_size, shuffle=False)
    cached, why = cached_features(args.features, mp, tp, {"train": train_rows, "val": val_rows}, classes,
                                  model.backbone)
    if cached is not None:
        # A frozen backbone without augmentation computes the same vectors every epoch: fit the head
        # alone on featurize's copy of them (same init, same batches), then save the whole model.
        trained = model.head
        train_loader = FeatureBatches(*cached["train"], tp["batch_size"], train_sampler, device)
        val_loader = FeatureBatches(*cached["val"], tp["batch_size"], val_sampler, device)
    else:
        trained = model
        train_ds = BinImages(train_rows, args.images, classes, train_transform(size, tp["augment"]), size,
                             tp["jpeg_draft"])
        val_ds = BinImages(val_rows, args.images, classes, eval_transform(size), size, tp["jpeg_draft"])
        train_loader = make_loader(train_ds, tp["batch_size"], False, tp["num_workers"], pin, tp["seed"],
                                   train_sampler)
        val_loader = make_loader(val_ds, tp["batch_size"], False, tp["num_workers"], pin, sampler=val_sampler)
    say(f"train: {'head only on ' if cached else 'images; no cached features: '}{why}")

    run_id = fingerprint(mp, tp, [Path(args.split) / "train.csv", Path(args.split) / "val.csv"])
    state, why = load_resumable(args.checkpoint, run_id) if tp["resume"] else (None, "train.resume is false")
    start, best_acc, best_epoch, best_state, bad_epochs, collapsed, history = 0, -1.0, -1, None, 0, 0, {}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, best_acc, best_epoch = state["epoch"] + 1, state["best_acc"], state["best_epoch"]
        best_state, bad_epochs, collapsed = state["best_state"], state["bad_epochs"], state.get("collapsed", 0)
        history = state.get("history", {})
        say(f"train: resuming at epoch {start + 1}/{tp['epochs']} from {args.checkpoint} "
            f"(best val acc so far {best_acc:.3f} at epoch {best_epoch + 1})")
        if best_state is not None and world.is_main:  # `dvc repro` removed the old model file before this run
            save_model(args.model, _with_state(model, best_state), classes, mp, size, {"val_acc": best_acc})
    else:
        say(f"train: starting fresh ({why}); {mp['arch']} on {device}"
            f"{' with ' + str(dtype).split('.')[-1] if dtype else ''}"
            f"{f' x{world.world_size} processes' if world.enabled else ''}, "
            f"{len(train_rows)} train / {len(val_rows)} val")
    net = DistributedDataParallel(trained, device_ids=[device.index] if device.type == "cuda" else None) \
        if world.enabled else trained
    seed_everything(tp["seed"] + 1000 * world.rank + start)  # augmentation differs per rank and per resume

    # Not a `with` block: a run that fails must not be saved as a finished experiment.
    live = Live(dir=args.live, resume=state is not None, save_dvc_exp=True, dvcyaml=False) if world.is_main else None
    if live is not None and state is None:
        live.log_params({"model": mp, "train": tp, "classes": classes})
    if live is not None:  # a kill between checkpoint and log: log those epochs from the checkpoint
        for epoch in sorted(e for e in history if e > _last_logged_step(args.live)):
            _log_epoch(live, epoch, history[epoch])
    profiler = StepProfiler(Path(args.live) / "profile", device) if tp["profile"] and world.is_main else None
    for epoch in range(start, tp["epochs"]):
        train_sampler.set_epoch(epoch)
        lr = optimizer.param_groups[-1]["lr"]
        with (profiler or contextlib.nullcontext()):
            tr = train_one_epoch(net, train_loader, optimizer, criterion, device, dtype, scaler, channels_last,
                                 world, profiler)
        if profiler is not None:
            say(f"train: profiler trace in {profiler.folder}/trace.json (open it in https://ui.perfetto.dev), "
                f"top operators in {profiler.folder}/ops.txt" if profiler.written else
                f"train: warning: {profiler.steps} steps are too few to profile (needs 2 or more)")
            profiler = None
        if not math.isfinite(tr.loss):
            raise TrainingDiverged(f"training loss is {tr.loss} at epoch {epoch + 1} with lr {lr:g}: "
                                   "lower train.lr (or set train.amp: off) and run again")
        val_loss, val_acc, pred_hist = evaluate_split(trained, val_loader, device, len(classes), dtype,
                                                      channels_last, world)
        scheduler.step()
        collapsed = collapse_streak(collapsed, pred_hist)
        if collapsed >= COLLAPSE_EPOCHS:
            only = classes[max(range(len(classes)), key=pred_hist.__getitem__)]
            say(f"train: warning: every val image got count {only} for {collapsed} epochs in a row; the model has "
                "collapsed to one class (try a lower train.lr or train.label_smoothing)")
        if val_acc > best_acc:
            best_acc, best_epoch, bad_epochs = val_acc, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if world.is_main:
                save_model(args.model, model, classes, mp, size, {"val_acc": val_acc, "epoch": epoch})
        else:
            bad_epochs += 1
        stop = bad_epochs >= tp["patience"] or epoch == tp["epochs"] - 1
        if world.is_main:
            history[epoch] = epoch_metrics(tr, val_loss, val_acc, lr, device)
            save_checkpoint(args.checkpoint, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), scaler=scaler.state_dict() if scaler else None,
                            epoch=epoch, best_acc=best_acc, best_epoch=best_epoch, best_state=best_state,
                            bad_epochs=bad_epochs, collapsed=collapsed, fingerprint=run_id, completed=stop,
                            params={"model": mp, "train": tp}, classes=classes, history=history)
            _log_epoch(live, epoch, history[epoch])
        say(f"epoch {epoch + 1}/{tp['epochs']}  train loss {tr.loss:.4f} acc {tr.acc:.3f}  "
            f"val loss {val_loss:.4f} acc {val_acc:.3f}  lr {lr:.2g}  {tr.images_per_s:.0f} img/s  "
            f"data wait {tr.data_wait_fraction:.0%}", flush=True)
        if tr.data_wait_fraction > LOADER_BOUND and cached is None:
            say(f"train: warning: the data loader is the bottleneck ({tr.data_wait_fraction:.0%} of the epoch "
                f"waited for batches); raise train.num_workers (now {tp['num_workers']})", flush=True)
        if bad_epochs >= tp["patience"]:
            say(f"train: early stop, no better val accuracy for {bad_epochs} epochs")
            break
        world.barrier()
    if live is not None:
        live.summary["best/val_acc"] = best_acc
        live.summary["best/epoch"] = best_epoch + 1
        live.end()
    say(f"train: best val acc {best_acc:.3f} at epoch {best_epoch + 1} -> {args.model}")


def epoch_metrics(tr, val_loss, val_acc, lr, device):
    metrics = {"train/loss": tr.loss, "train/acc": tr.acc, "val/loss": val_loss, "val/acc": val_acc, "lr": lr,
               "train/images_per_s": tr.images_per_s, "train/images_seen": tr.images,
               "train/data_wait_fraction": tr.data_wait_fraction}
    if device.type == "cuda":
        metrics["train/max_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return metrics


def _log_epoch(live, epoch, metrics):
    live.step = epoch
    for name, value in metrics.items():
        live.log_metric(name, value)
    live.next_step()


def _last_logged_step(live_dir):
    try:
        return int(json.loads((Path(live_dir) / "metrics.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _with_state(model, state_dict):
    clone = copy.deepcopy(model)
    clone.load_state_dict(state_dict)
    return clone


if __name__ == "__main__":
    main()
