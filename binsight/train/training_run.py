"""Training a counting model, as named steps that read top to bottom:

    fit()  ->  load_data  ->  build_parts  ->  make_loaders  ->  resume_or_start
           ->  for each epoch: train_one_epoch, evaluate_split, record_epoch  ->  finish

`stages/train.py` reads params and calls `fit`. Each step takes the run's context (`Run`: paths,
params, classes, process group) and what it works on (`Parts`: model, optimizer, loss, device).
"""

import contextlib
import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from dvclive import Live
from torch.nn.parallel import DistributedDataParallel

from binsight.data.image_datasets import (
    BinImages,
    InMemoryBatches,
    InMemoryImages,
    eval_transform,
    make_loader,
    train_transform,
)
from binsight.data.shard_stream import ShardSet, shard_loaders
from binsight.data.split_files import class_names, read_split
from binsight.errors import BinsightError, ConfigError
from binsight.files import atomic_write_text
from binsight.model.aux_targets import AUX_OUTPUTS, read_aux_targets
from binsight.model.count_losses import AuxTargetLoss, CountingLoss, class_weights, decode, output_size, standardizer
from binsight.model.counting_model import model_from_params, preprocessing, save_model
from binsight.params import ModelParams, TrainParams
from binsight.progress import Progress as ProgressBar
from binsight.train.checkpoint import fingerprint, load_resumable, restore_rng, rng_state, save_checkpoint
from binsight.train.distributed import BalancedShardSampler, ShardSampler, World
from binsight.train.embeddings import FeatureBatches, cached_features
from binsight.train.loops import (
    Parts,
    amp_dtype,
    evaluate_split,
    pick_device,
    seed_everything,
    train_one_epoch,
    use_channels_last,
)
from binsight.train.profiling import StepProfiler
from binsight.train.run_paths import Paths

COLLAPSE_EPOCHS = 2  # warn when val predictions are all one class this many epochs in a row
LOADER_BOUND = 0.5  # warn when the loop waits for data more than this fraction of an epoch


class TrainingDiverged(BinsightError):
    pass


@dataclass
class Run:
    """What every step of one training run reads: where it reads and writes, its params, its classes
    (the counts the model tells apart), its process group and its fingerprint (binsight.train.checkpoint)."""

    paths: Paths
    model_params: ModelParams
    train_params: TrainParams
    world: object
    classes: list[int] = field(default_factory=list)
    run_id: str = ""

    def say(self, *args, **kwargs):
        """print, on the main process only."""
        if self.world.is_main:
            print(*args, **kwargs)


@dataclass
class EpochResult:
    epoch: int  # from 0; the log, the curves and the model file count from 1
    stats: object  # binsight.train.loops.EpochStats of the training pass
    lr: float
    val_loss: float
    val_acc: float
    pred_hist: list  # val predictions per class


@dataclass
class RunState:
    """What a checkpoint carries across a kill: where the run is and the best epoch so far."""

    start: int = 0
    best_acc: float = -1.0
    best_epoch: int = -1
    best_state: dict | None = None
    bad_epochs: int = 0
    collapsed: int = 0
    history: dict = field(default_factory=dict)
    rng: dict | None = None  # the random streams after the last checkpointed epoch (rank 0's)


def make_optimizer(model, train_params):
    lr = train_params.lr
    head = [*model.head.parameters(), *(model.aux.parameters() if model.aux is not None else ())]
    if model.freeze_backbone:
        groups = [{"params": head, "lr": lr}]
    else:
        groups = [
            {"params": list(model.backbone.parameters()), "lr": train_params.backbone_lr or lr},
            {"params": head, "lr": lr},
        ]
    if train_params.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=train_params.momentum, weight_decay=train_params.weight_decay)
    cls = torch.optim.AdamW if train_params.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, weight_decay=train_params.weight_decay, fused=fused_supported(groups) or None)


def fused_supported(groups):
    """Whether torch's fused Adam/AdamW kernel can update these parameters (float tensors on the CPU or
    a CUDA GPU): one kernel per step instead of a Python loop over the tensors (torch's CPU default) or
    its foreach kernels (its GPU default). The same update rule, rounded differently; bench/train.py
    times both."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])


def lr_factor(step, train_params, steps_per_epoch):
    """The lr multiplier after `step` optimizer steps: a linear warmup over train.warmup_epochs,
    then the schedule (cosine to 0 over the remaining steps, step decay, or constant)."""
    warmup = round(train_params.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if train_params.scheduler == "cosine":
        total = max(train_params.epochs * steps_per_epoch - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total) / total))
    if train_params.scheduler == "step":
        return train_params.gamma ** (step // (train_params.step_size * steps_per_epoch))
    return 1.0


def make_scheduler(optimizer, train_params, steps_per_epoch):
    """Stepped after every optimizer step (a smooth schedule even for a few epochs)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, train_params, max(steps_per_epoch, 1))
    )


def collapse_streak(streak, pred_hist):
    """Epochs in a row whose val predictions all fell in one class (the notebook's silent failure)."""
    return streak + 1 if sum(1 for n in pred_hist if n) == 1 else 0


class EpochReporter(Protocol):
    """Told each epoch's val accuracy (nan when the training loss diverged); says whether to stop the run.
    `binsight tune` passes its trial's pruner (binsight.tune.pruning.TrialLink)."""

    def report(self, val_acc: float, epoch: int) -> bool: ...


class RunPruned(BinsightError):
    """The EpochReporter stopped this run: its val accuracy trails the tuning study's other trials."""


def fit(
    paths: Paths,
    model_params: ModelParams,
    train_params: TrainParams,
    world: World,
    reporter: EpochReporter | None = None,
) -> None:
    """Train, keep the best epoch by val accuracy in `paths.model`, checkpoint every epoch. `reporter`, when
    given, hears every epoch's val accuracy and may stop the run early (RunPruned)."""
    run = Run(paths, model_params, train_params, world)
    started = time.perf_counter()
    shards = ShardSet(train_params.shards or paths.shards) if train_params.data == "shards" else None
    train_rows, val_rows, run.classes = load_data(paths, check_images=shards is None)
    aux = (
        torch.tensor(read_aux_targets(train_rows, paths.metadata, paths.images), dtype=torch.float32).reshape(-1, 3)
        if train_params.aux_weight
        else None
    )
    parts = build_parts(run, train_rows, aux)
    loaders, cached = make_loaders(run, parts, train_rows, val_rows, aux, shards)
    add_schedule_and_ema(parts, train_params, len(loaders["train"]))
    inputs = [Path(paths.split) / "train.csv", Path(paths.split) / "val.csv"]
    if shards is not None and not shards.s3:
        inputs.append(Path(shards.folder) / "index.json")
    run.run_id = fingerprint(model_params.as_dict(), train_params.as_dict(), inputs)
    progress = resume_or_start(run, parts, (len(train_rows), len(val_rows)))
    net = (
        DistributedDataParallel(parts.trained, device_ids=[parts.device.index] if parts.device.type == "cuda" else None)
        if world.enabled
        else parts.trained
    )
    if progress.rng is not None and world.rank == 0:
        restore_rng(progress.rng)  # continue the random streams: the same batches as an uninterrupted run
    else:
        seed_everything(train_params.seed + 1000 * world.rank + progress.start)  # other augmentation per rank
    live = open_live(run, progress)
    profiler = (
        StepProfiler(Path(paths.live) / "profile", parts.device) if train_params.profile and world.is_main else None
    )
    for epoch in range(progress.start, train_params.epochs):
        loaders["sampler"].set_epoch(epoch)
        lr = parts.optimizer.param_groups[-1]["lr"]
        with profiler or contextlib.nullcontext():
            bar = ProgressBar(
                f"train epoch {epoch + 1}/{train_params.epochs}", len(loaders["sampler"]), enabled=world.is_main
            )
            stats = train_one_epoch(net, loaders["train"], parts, world, profiler, bar)
        profiler = close_profiler(profiler, run.say)
        if not math.isfinite(stats.loss):
            if reporter is not None and reporter.report(float("nan"), epoch):
                raise RunPruned(f"pruned by binsight tune at epoch {epoch + 1}: the training loss is {stats.loss}")
            raise TrainingDiverged(
                f"training loss is {stats.loss} at epoch {epoch + 1} with lr {lr:g}: "
                "lower lr (or set train.amp: off) and run again"
            )
        val_loss, val_acc, pred_hist = evaluate_split(
            parts.eval_module(), loaders["val"], parts, len(run.classes), world
        )
        stop = record_epoch(run, parts, progress, EpochResult(epoch, stats, lr, val_loss, val_acc, pred_hist), live)
        if stats.data_wait_fraction > LOADER_BOUND and cached is None:
            run.say(
                f"train: warning: the data loader is the bottleneck ({stats.data_wait_fraction:.0%} of the "
                f"epoch waited for batches); raise train.num_workers (now {train_params.num_workers})",
                flush=True,
            )
        if reporter is not None and reporter.report(val_acc, epoch) and not stop:
            raise RunPruned(
                f"pruned by binsight tune at epoch {epoch + 1}/{train_params.epochs}: val acc "
                f"{val_acc:.3f} trails the study's other trials at this epoch"
            )
        if stop:
            break
        world.barrier()
    finish(live, progress, paths.model, run.say, time.perf_counter() - started)


def load_data(paths, check_images=True):
    images = paths.images if check_images else None
    train_rows = read_split(paths.split, "train", images)
    val_rows = read_split(paths.split, "val", images)
    return train_rows, val_rows, sorted({label for _, label in train_rows + val_rows})


def build_parts(run, train_rows, aux=None):
    """The model, optimizer, loss and precision of a run. With `aux` (the training rows' metadata targets,
    binsight.model.aux_targets) the model has a second head for them and the loss adds their term."""
    model_params, train_params, classes = run.model_params, run.train_params, run.classes
    seed_everything(train_params.seed)  # the same initial weights on every rank
    device = process_device(run.world)
    dtype = amp_dtype(train_params.amp, device, training=True)
    channels_last = use_channels_last(train_params.channels_last, device, dtype)
    loss = train_params.loss
    count_outputs = output_size(loss, len(classes))
    model = model_from_params(
        model_params, len(classes), loss=loss, aux_outputs=AUX_OUTPUTS if aux is not None else 0
    ).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, train_params)
    index = {c: i for i, c in enumerate(classes)}
    weights = (
        class_weights([index[label] for _, label in train_rows], len(classes))
        if train_params.balance == "weighted_loss"
        else None
    )
    criterion = CountingLoss(loss, len(classes), weights, train_params.label_smoothing, train_params.neighbour_weight)
    if aux is not None:
        criterion = AuxTargetLoss(criterion, count_outputs, train_params.aux_weight, *standardizer(aux))
    return Parts(
        model=model,
        optimizer=optimizer,
        criterion=criterion.to(device),
        device=device,
        dtype=dtype,
        channels_last=channels_last,
        decode=lambda outputs: decode(loss, outputs[:, :count_outputs], len(classes)),
        scaler=torch.amp.GradScaler("cuda") if dtype == torch.float16 else None,
    )


def process_device(world):
    """This process's device: under DDP with GPUs, the GPU of its local rank (one per process)."""
    if not (world.enabled and torch.cuda.is_available()):
        return pick_device()
    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"process {world.local_rank} of this node has no GPU of its own ({torch.cuda.device_count()} "
            "visible): set train.distributed.nproc_per_node to the GPU count, or backend: gloo with "
            "CUDA_VISIBLE_DEVICES= to train on the CPU"
        )
    return torch.device("cuda", world.local_rank)


def add_schedule_and_ema(parts, train_params, steps_per_epoch):
    """The per-step lr schedule, and an EMA of the weights that learn (train.ema: its decay per step)."""
    parts.scheduler = make_scheduler(parts.optimizer, train_params, steps_per_epoch)
    if train_params.ema > 0:
        parts.ema = torch.optim.swa_utils.AveragedModel(
            parts.trained,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(train_params.ema),
            use_buffers=True,
        )


def make_loaders(run, parts, train_rows, val_rows, aux=None, shards=None):
    """-> ({"train", "val", "sampler"}, the cached features or None), and `parts.trained` set to the
    module that learns (the head alone on cached features). `aux`: the training rows' metadata
    targets, served with their images. `shards` (a binsight.data.shard_stream.ShardSet): stream from them."""
    paths, model_params, train_params, world, say = run.paths, run.model_params, run.train_params, run.world, run.say
    size, batch = train_params.image_size, train_params.batch_size
    pin = train_params.pin_memory and parts.device.type == "cuda"
    if shards is not None:
        if shards.index["image_size"] != size:
            raise ConfigError(
                f"{shards.location} holds {shards.index['image_size']} px images, train.image_size is {size}: "
                "run `dvc repro shard` (or point train.shards at shards of that size)"
            )
        loaders = shard_loaders(shards, run.classes, train_params, world, parts.device, pin)
        cache = loaders.pop("cache")  # a message, not a loader
        say(
            f"train: streaming {len(shards.entries('train'))} train shards from {shards.location}, "
            f"{len(loaders['train'])} steps an epoch on each of {world.world_size} process(es); {cache}"
        )
        return loaders, None
    if train_params.balance == "sampler":  # every count equally often, drawn with replacement
        train_sampler = BalancedShardSampler(
            [label for _, label in train_rows], world.rank, world.world_size, seed=train_params.seed
        )
    else:
        train_sampler = ShardSampler(
            len(train_rows), world.rank, world.world_size, shuffle=True, seed=train_params.seed
        )
    val_sampler = ShardSampler(len(val_rows), world.rank, world.world_size, shuffle=False)
    cached, why = cached_features(
        paths.features,
        model_params,
        train_params,
        {"train": train_rows, "val": val_rows},
        run.classes,
        parts.model.backbone,
    )
    say(f"train: {'head only on ' if cached else 'images; no cached features: '}{why}")
    if cached is not None:
        # A frozen backbone without augmentation computes the same vectors every epoch: fit the head
        # alone on featurize's copy of them (same init, same batches), then save the whole model.
        parts.trained = parts.model.head
        return {
            "train": FeatureBatches(*cached["train"], batch, train_sampler, parts.device),
            "val": FeatureBatches(*cached["val"], batch, val_sampler, parts.device),
            "sampler": train_sampler,
        }, cached
    draft, augment = train_params.jpeg_draft, train_params.augment
    workers, seed = train_params.num_workers, train_params.seed
    if train_params.cache_images:
        train_ds = InMemoryImages(train_rows, paths.images, run.classes, size, draft, aux=aux)
        val_ds = InMemoryImages(val_rows, paths.images, run.classes, size, draft)
        say(
            f"train: {len(train_ds) + len(val_ds)} images decoded once and kept in memory "
            f"({(train_ds.pixels.numel() + val_ds.pixels.numel()) / 2**20:.0f} MiB)"
        )
        return {
            "train": InMemoryBatches(train_ds, batch, train_sampler, augment),
            "val": InMemoryBatches(val_ds, batch, val_sampler),
            "sampler": train_sampler,
        }, None
    train_ds = BinImages(train_rows, paths.images, run.classes, train_transform(size, augment), size, draft, aux)
    val_ds = BinImages(val_rows, paths.images, run.classes, eval_transform(size), size, draft)
    return {
        "train": make_loader(train_ds, batch, False, workers, pin, seed, train_sampler),
        "val": make_loader(val_ds, batch, False, workers, pin, sampler=val_sampler),
        "sampler": train_sampler,
    }, None


def resume_or_start(run, parts, sizes):
    """The checkpoint's progress when it belongs to this run (its state loaded into `parts`), else a fresh start."""
    paths, model_params, train_params, world, say = run.paths, run.model_params, run.train_params, run.world, run.say
    state, why = (
        load_resumable(paths.checkpoint, run.run_id) if train_params.resume else (None, "train.resume is false")
    )
    if state is not None and state.get("trained", "model") != trained_name(parts):
        state, why = (
            None,
            f"checkpoint holds the {state.get('trained', 'model')}'s weights, this run trains the "
            f"{trained_name(parts)}",
        )
    if state is None:
        dtype = (f" with {str(parts.dtype).split('.')[-1]}" if parts.dtype else "") + (
            ", channels-last" if parts.channels_last else ""
        )
        procs = f" x{world.world_size} processes" if world.enabled else ""
        say(
            f"train: starting fresh ({why}); {model_params.arch} on {parts.device}{dtype}{procs}, "
            f"{sizes[0]} train / {sizes[1]} val"
        )
        return RunState()
    parts.trained.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    if parts.scaler is not None and state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    if parts.ema is not None and state.get("ema"):
        parts.ema.load_state_dict(state["ema"])
    progress = RunState(
        start=state["epoch"] + 1,
        best_acc=state["best_acc"],
        best_epoch=state["best_epoch"],
        best_state=state["best_state"],
        bad_epochs=state["bad_epochs"],
        collapsed=state.get("collapsed", 0),
        history=state.get("history", {}),
        rng=state.get("rng"),
    )
    say(
        f"train: resuming at epoch {progress.start + 1}/{train_params.epochs} from {paths.checkpoint} "
        f"(best val acc so far {progress.best_acc:.3f} at epoch {progress.best_epoch + 1})"
    )
    if progress.best_state is not None and world.is_main:  # `dvc repro` removed the old model file before this run
        save_best(
            run,
            _with_state(parts, progress.best_state),
            {"val_acc": progress.best_acc, "epoch": progress.best_epoch + 1},
        )
    return progress


def open_live(run, progress):
    """dvclive on the main process. Not a `with` block: a run that fails must not be marked finished.
    Epochs checkpointed but killed before they were logged are logged now. save_dvc_exp is off:
    `dvc exp run` records experiments; a stage run by hand writes its outputs and nothing else
    (dvclive would otherwise commit the workspace as an experiment after every such run)."""
    if not run.world.is_main:
        return None
    live_dir = run.paths.live
    resumed = progress.start > 0
    if resumed:
        drop_torn_summary(Path(live_dir) / "metrics.json")
    live = Live(dir=live_dir, resume=resumed, save_dvc_exp=False, dvcyaml=False)
    if not resumed:
        live.log_params(
            {"model": run.model_params.as_dict(), "train": run.train_params.as_dict(), "classes": run.classes}
        )
    names = sorted({name for metrics in progress.history.values() for name in metrics})
    for epoch in sorted(e for e in progress.history if e + 1 > complete_curves(live_dir, names)):
        _log_epoch(live, epoch, progress.history[epoch])
    return live


def drop_torn_summary(path):
    """dvclive rewrites metrics.json in place at every step, so a kill during that write leaves it
    empty or cut off, and `Live(resume=True)` would stop on it. Such a file is removed: the next
    logged epoch writes the summary again, whole."""
    try:
        json.loads(path.read_text())
    except FileNotFoundError:
        pass
    except ValueError:  # JSONDecodeError, or bytes cut inside a UTF-8 character
        path.unlink()


def close_profiler(profiler, say):
    """The profiler records the first epoch only; say where its trace went."""
    if profiler is None:
        return None
    say(
        f"train: profiler trace in {profiler.folder}/trace.json (open it in https://ui.perfetto.dev), "
        f"top operators in {profiler.folder}/ops.txt"
        if profiler.written
        else f"train: warning: {profiler.steps} steps are too few to profile (needs 2 or more)"
    )
    return None


def save_best(run, model, extra):
    model_params, train_params = run.model_params, run.train_params
    save_model(
        run.paths.model,
        model,
        run.classes,
        model_params,
        train_params.image_size,
        {"class_names": class_names(run.paths.split, run.classes), **extra},
        loss=train_params.loss,
        preprocess=preprocessing(train_params.image_size, train_params.jpeg_draft, model_params.tta),
    )


def record_epoch(run, parts, progress, result, live):
    """Update `progress` with one epoch's val result; save the best model, the checkpoint and the
    dvclive step (main process). -> True when training stops after this epoch."""
    train_params, world, say, epoch = run.train_params, run.world, run.say, result.epoch
    progress.collapsed = collapse_streak(progress.collapsed, result.pred_hist)
    if progress.collapsed >= COLLAPSE_EPOCHS:
        only = run.classes[max(range(len(run.classes)), key=result.pred_hist.__getitem__)]
        say(
            f"train: warning: every val image got count {only} for {progress.collapsed} epochs in a row; the model "
            "has collapsed to one class (try a lower lr or train.label_smoothing)"
        )
    if result.val_acc > progress.best_acc:
        progress.best_acc, progress.best_epoch, progress.bad_epochs = result.val_acc, epoch, 0
        progress.best_state = parts.model_state()
        if world.is_main:  # without EMA the best weights are the model's own: no copy needed
            best = parts.model if parts.ema is None else _with_state(parts, progress.best_state)
            save_best(run, best, {"val_acc": result.val_acc, "epoch": epoch + 1})
    else:
        progress.bad_epochs += 1
    early = progress.bad_epochs >= train_params.patience
    stop = early or epoch == train_params.epochs - 1
    every = train_params.checkpoint_every
    stats = result.stats
    if world.is_main:
        progress.history[epoch] = epoch_metrics(stats, result.val_loss, result.val_acc, result.lr, parts.device)
    if world.is_main and (stop or (epoch + 1) % every == 0):
        # only what learns: on cached features the head (KBs), not a ResNet50 (~100 MB)
        save_checkpoint(
            run.paths.checkpoint,
            model=parts.trained.state_dict(),
            trained=trained_name(parts),
            optimizer=parts.optimizer.state_dict(),
            scheduler=parts.scheduler.state_dict(),
            scaler=parts.scaler.state_dict() if parts.scaler else None,
            ema=parts.ema.state_dict() if parts.ema is not None else None,
            epoch=epoch,
            best_acc=progress.best_acc,
            best_epoch=progress.best_epoch,
            best_state=progress.best_state,
            bad_epochs=progress.bad_epochs,
            collapsed=progress.collapsed,
            fingerprint=run.run_id,
            completed=stop,
            params={"model": run.model_params.as_dict(), "train": train_params.as_dict()},
            classes=run.classes,
            history=progress.history,
            rng=rng_state(),
        )
    if world.is_main:
        _log_epoch(live, epoch, progress.history[epoch])
    say(
        f"epoch {epoch + 1}/{train_params.epochs}  train loss {stats.loss:.4f} acc {stats.acc:.3f}  "
        f"val loss {result.val_loss:.4f} acc {result.val_acc:.3f}  lr {result.lr:.2g}  "
        f"{stats.images_per_s:.0f} img/s  data wait {stats.data_wait_fraction:.0%}",
        flush=True,
    )
    if early:
        say(f"train: early stop, no better val accuracy for {progress.bad_epochs} epochs")
    return stop


def finish(live, progress, model_path, say, seconds):
    if live is not None:
        live.summary["best/val_acc"] = progress.best_acc
        live.summary["best/epoch"] = progress.best_epoch + 1
        live.summary["run_seconds"] = round(seconds, 1)  # this run's wall time (after a resume: since the resume)
        live.end()
    say(f"train: best val acc {progress.best_acc:.3f} at epoch {progress.best_epoch + 1} -> {model_path}")


def epoch_metrics(stats, val_loss, val_acc, lr, device):
    metrics = {
        "train/loss": stats.loss,
        "train/acc": stats.acc,
        "val/loss": val_loss,
        "val/acc": val_acc,
        "train/lr": lr,
        "train/images_per_s": stats.images_per_s,
        "train/images_seen": stats.images,
        "train/data_wait_fraction": stats.data_wait_fraction,
    }
    if device.type == "cuda":
        metrics["train/max_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return metrics


def _log_epoch(live, epoch, metrics):
    live.step = epoch + 1  # epochs count from 1 in the log, the curves, the summary and the model file
    for name, value in metrics.items():
        live.log_metric(name, value)
    live.next_step()


def complete_curves(live_dir, names):
    """The last epoch every curve in `names` has, with any later rows cut: a kill can land after
    some .tsv files got an epoch's row and before the others (or metrics.json) did. Those rows are
    dropped and the epoch is logged again whole, so no curve has an epoch twice or misses one.
    A file killed before its header was whole is removed: dvclive appends to a file that exists
    and writes the header only when it creates one."""
    rows = {}
    for name in names:
        tsv = Path(live_dir) / "plots" / "metrics" / f"{name}.tsv"
        lines = tsv.read_text().splitlines() if tsv.exists() else []
        header = lines[0].split("\t") if lines else []
        column = header.index("step") if "step" in header else None
        if column is None and tsv.exists():
            tsv.unlink()
            lines = []
        steps = []
        for line in lines[1:] if column is not None else []:
            try:
                steps.append(int(float(line.split("\t")[column])))
            except (ValueError, IndexError):
                break  # a half-written last line
        rows[tsv] = (lines, steps)
    complete = min((steps[-1] if steps else -1 for _, steps in rows.values()), default=-1)
    for tsv, (lines, steps) in rows.items():
        if steps and steps[-1] > complete or len(lines) - 1 > len(steps):
            kept = [line for line, step in zip(lines[1:], steps) if step <= complete]
            atomic_write_text(tsv, "\n".join([lines[0], *kept]) + "\n")
    return complete


def trained_name(parts):
    return "model" if parts.trained is parts.model else "head"


def _with_state(parts, state_dict):
    """A copy of the whole model with `state_dict` in the part that learns (`parts.trained`)."""
    clone = copy.deepcopy(parts.model)
    (clone if parts.trained is parts.model else clone.head).load_state_dict(state_dict)
    return clone
