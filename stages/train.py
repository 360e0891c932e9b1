"""Stage `train`: fit the counting model on data/split/train.csv, pick the best epoch on val.

    python -m stages.train            # what `dvc repro train` runs

Outputs: models/model.pt (best val accuracy: weights + what rebuilds them), models/checkpoint.pt
(last epoch, to resume a killed run), dvclive/train/ (params, per-epoch metrics and plots).
"""
import argparse
import copy
import math
from pathlib import Path

import torch
from dvclive import Live
from torch import nn

from stages.checkpoint import fingerprint, load_resumable, save_checkpoint
from stages.data import BinImages, eval_transform, make_loader, read_split, train_transform
from stages.engine import amp_dtype, mean_loss, pick_device, predict, seed_everything, train_one_epoch
from stages.errors import BinsightError, one_line_errors
from stages.model import model_from_params, save_model
from stages.params import check_model, check_train, load_params, section

COLLAPSE_EPOCHS = 2  # warn when val predictions are all one class this many epochs in a row


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


class TrainingDiverged(BinsightError):
    pass


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", default="data/split", help="folder with train.csv and val.csv")
    parser.add_argument("--images", default="data/raw/images")
    parser.add_argument("--model", default="models/model.pt", help="best model (default: %(default)s)")
    parser.add_argument("--checkpoint", default="models/checkpoint.pt", help="resumable state (default: %(default)s)")
    parser.add_argument("--live", default="dvclive/train", help="dvclive folder (default: %(default)s)")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    mp, tp = section(params, "model", check_model), section(params, "train", check_train)
    train_rows = read_split(args.split, "train", args.images)
    val_rows = read_split(args.split, "val", args.images)
    classes = sorted({label for _, label in train_rows + val_rows})

    seed_everything(tp["seed"])
    device = pick_device()
    dtype = amp_dtype(tp["amp"], device)
    channels_last = tp["channels_last"] and device.type == "cuda"
    model = model_from_params(mp, len(classes)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, tp)
    scheduler = make_scheduler(optimizer, tp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    criterion = nn.CrossEntropyLoss(label_smoothing=tp["label_smoothing"])
    pin = tp["pin_memory"] and device.type == "cuda"
    size = tp["image_size"]
    train_loader = make_loader(BinImages(train_rows, args.images, classes, train_transform(size, tp["augment"]), size),
                               tp["batch_size"], True, tp["num_workers"], pin, tp["seed"])
    val_loader = make_loader(BinImages(val_rows, args.images, classes, eval_transform(size), size),
                             tp["batch_size"], False, tp["num_workers"], pin)

    run_id = fingerprint(mp, tp, [Path(args.split) / "train.csv", Path(args.split) / "val.csv"])
    state, why = load_resumable(args.checkpoint, run_id) if tp["resume"] else (None, "train.resume is false")
    start, best_acc, best_epoch, best_state, bad_epochs, collapsed = 0, -1.0, -1, None, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, best_acc, best_epoch = state["epoch"] + 1, state["best_acc"], state["best_epoch"]
        best_state, bad_epochs, collapsed = state["best_state"], state["bad_epochs"], state.get("collapsed", 0)
        torch.set_rng_state(state["rng"])
        print(f"train: resuming at epoch {start + 1}/{tp['epochs']} from {args.checkpoint} "
              f"(best val acc so far {best_acc:.3f} at epoch {best_epoch + 1})")
        if best_state is not None:  # `dvc repro` removed the old model file before this run
            save_model(args.model, _with_state(model, best_state), classes, mp, size, {"val_acc": best_acc})
    else:
        print(f"train: starting fresh ({why}); {mp['arch']} on {device}"
              f"{' with ' + str(dtype).split('.')[-1] if dtype else ''}, {len(train_rows)} train / {len(val_rows)} val")

    # Not a `with` block: a run that fails must not be saved as a finished experiment.
    live = Live(dir=args.live, resume=state is not None, save_dvc_exp=True, dvcyaml=False)
    if state is None:
        live.log_params({"model": mp, "train": tp, "classes": classes})
    for epoch in range(start, tp["epochs"]):
        lr = optimizer.param_groups[-1]["lr"]
        tr = train_one_epoch(model, train_loader, optimizer, criterion, device, dtype, scaler, channels_last)
        if not math.isfinite(tr.loss):
            raise TrainingDiverged(f"training loss is {tr.loss} at epoch {epoch + 1} with lr {lr:g}: "
                                   "lower train.lr (or set train.amp: off) and run again")
        probs, targets = predict(model, val_loader, device, dtype, channels_last)
        preds = probs.argmax(1)
        val_acc, val_loss = float((preds == targets).mean()), mean_loss(probs, targets)
        scheduler.step()
        collapsed = collapsed + 1 if len(set(preds.tolist())) == 1 else 0
        if collapsed >= COLLAPSE_EPOCHS:
            print(f"train: warning: every val image got count {classes[preds[0]]} for {collapsed} epochs in a "
                  "row; the model has collapsed to one class (try a lower train.lr or train.label_smoothing)")
        if val_acc > best_acc:
            best_acc, best_epoch, bad_epochs = val_acc, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            save_model(args.model, model, classes, mp, size, {"val_acc": val_acc, "epoch": epoch})
        else:
            bad_epochs += 1
        stop = bad_epochs >= tp["patience"] or epoch == tp["epochs"] - 1
        save_checkpoint(args.checkpoint, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), scaler=scaler.state_dict() if scaler else None,
                        epoch=epoch, best_acc=best_acc, best_epoch=best_epoch, best_state=best_state,
                        bad_epochs=bad_epochs, collapsed=collapsed, fingerprint=run_id, completed=stop,
                        params={"model": mp, "train": tp}, classes=classes, rng=torch.get_rng_state())
        live.step = epoch
        for name, value in (("train/loss", tr.loss), ("train/acc", tr.acc), ("val/loss", val_loss),
                            ("val/acc", val_acc), ("lr", lr), ("train/images_per_s", tr.images_per_s),
                            ("train/data_wait_fraction", tr.data_wait_fraction)):
            live.log_metric(name, value)
        live.next_step()
        print(f"epoch {epoch + 1}/{tp['epochs']}  train loss {tr.loss:.4f} acc {tr.acc:.3f}  "
              f"val loss {val_loss:.4f} acc {val_acc:.3f}  lr {lr:.2g}  {tr.images_per_s:.0f} img/s  "
              f"data wait {tr.data_wait_fraction:.0%}", flush=True)
        if tr.data_wait_fraction > 0.5 and device.type != "cpu":
            print(f"train: warning: {tr.data_wait_fraction:.0%} of the epoch waited for data; "
                  "raise train.num_workers", flush=True)
        if bad_epochs >= tp["patience"]:
            print(f"train: early stop, no better val accuracy for {bad_epochs} epochs")
            break
    live.summary["best/val_acc"] = best_acc
    live.summary["best/epoch"] = best_epoch + 1
    live.end()
    print(f"train: best val acc {best_acc:.3f} at epoch {best_epoch + 1} -> {args.model}")


def _with_state(model, state_dict):
    clone = copy.deepcopy(model)
    clone.load_state_dict(state_dict)
    return clone


if __name__ == "__main__":
    main()
