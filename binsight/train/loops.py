"""Training and inference loops, device and mixed-precision choices. No I/O, no params files."""

import contextlib
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from binsight.data.square_views import average_over_views, dihedral, views


def pick_device():
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16():
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX): autocast then speeds up training."""
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


def amp_dtype(setting, device, training=False):
    """The autocast dtype for `train.amp` on this device; None = full precision.
    GPU: auto = bf16 where supported, else fp16. CPU: only an explicit `bf16` while training, on a
    CPU with native bf16 (elsewhere autocast would run in fp32 anyway); inference on the CPU stays fp32, so evaluate,
    predict and serve give the same answers on it."""
    if setting == "off":
        return None
    if device.type == "cpu":
        return torch.bfloat16 if training and setting == "bf16" and cpu_has_bf16() else None
    if device.type != "cuda":
        return None
    if setting == "bf16" or (setting == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def use_channels_last(setting, device, dtype):
    """Whether training keeps the model and its batches channels-last (`train.channels_last`): on a GPU,
    and on the CPU under bf16 autocast, where oneDNN's bf16 convolutions run faster in it (bench/train.py
    times both layouts). Not in fp32 on the CPU, where it gains nothing for training; evaluate, predict
    and serve keep the default layout."""
    return bool(setting) and (device.type == "cuda" or (device.type == "cpu" and dtype == torch.bfloat16))


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class EpochStats:
    loss: float
    acc: float
    images: int
    seconds: float
    data_wait: float  # seconds spent waiting for the next batch from the loader

    @property
    def images_per_s(self):
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def data_wait_fraction(self):
        return self.data_wait / self.seconds if self.seconds else 0.0


def _to_device(x, y, device, channels_last):
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def softmax(outputs):
    return torch.softmax(outputs.float(), dim=1)


@dataclass
class Parts:
    """What one training run is made of, on its device: all that a training step and a val pass use."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    device: torch.device
    dtype: object = None  # autocast precision, or None for fp32
    channels_last: bool = False
    decode: object = softmax  # head outputs -> class probabilities (binsight.model.count_losses.decode)
    scheduler: object = None  # stepped after every optimizer step
    scaler: object = None  # GradScaler, for fp16
    ema: object = None  # AveragedModel of the module that learns, when train.ema > 0
    trained: nn.Module | None = None  # the module that learns: the model, or its head alone on cached features

    def __post_init__(self):
        self.trained = self.trained or self.model

    def after_step(self, model):
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(getattr(model, "module", model))

    def eval_module(self):
        """What val sees: the EMA of the weights when kept, else the weights themselves."""
        return self.ema.module if self.ema is not None else self.trained

    def model_state(self):
        """The weights of the module that learns (the whole model, or the head alone on cached
        features: the frozen backbone is rebuilt from params): with EMA, the averaged ones."""
        state = self.eval_module().state_dict()
        return {k: v.detach().cpu().clone() for k, v in state.items()}


def train_one_epoch(model, loader, parts, world=None, profiler=None, progress=None):
    """One pass over `loader`, stepping `parts.optimizer` on `model` (the DDP wrapper of `parts.trained`
    under several processes, else `parts.trained`). With a `world` of several processes, the returned
    loss, accuracy and image count are over all of them. A batch of three (images, targets, aux
    targets) passes the third to the criterion (binsight.model.aux_targets)."""
    model.train()
    device, dtype = parts.device, parts.dtype
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss * n, correct, n
    data_wait = 0.0
    start = tick = time.perf_counter()
    join = world.join(model) if world is not None else contextlib.nullcontext()
    with join:
        for x, y, *aux in loader:
            data_wait += time.perf_counter() - tick
            x, y = _to_device(x, y, device, parts.channels_last)
            aux = [a.to(device, non_blocking=True) for a in aux]
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                outputs = model(x)
                loss = parts.criterion(outputs, y, *aux)
            parts.optimizer.zero_grad(set_to_none=True)
            if parts.scaler is not None:
                parts.scaler.scale(loss).backward()
                parts.scaler.step(parts.optimizer)
                parts.scaler.update()
            else:
                loss.backward()
                parts.optimizer.step()
            parts.after_step(model)
            # Accumulate on the device: one sync per epoch instead of one per step.
            sums[0] += loss.detach().double() * len(y)
            sums[1] += (parts.decode(outputs.detach()).argmax(1) == y).sum()
            sums[2] += len(y)
            if profiler is not None:
                profiler.step()
            if progress is not None:
                progress.update(len(y))
            tick = time.perf_counter()
    if progress is not None:
        progress.close()
    if world is not None:
        world.sum(sums)
    if device.type == "cuda":
        torch.cuda.synchronize()
    loss_sum, correct, seen = sums.tolist()
    return EpochStats(
        loss_sum / max(seen, 1), correct / max(seen, 1), int(seen), time.perf_counter() - start, data_wait
    )


@torch.no_grad()
def predict(model, loader, device, dtype=None, channels_last=False, decode=softmax, tta="none", progress=None):
    """-> (probabilities [n, classes] float32, targets [n]) as numpy arrays, in loader order.
    With `tta` (binsight.data.square_views), the probabilities are averaged over the counting-safe views."""
    model.eval()

    def probabilities_of(x):
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return decode(model(x).float())

    def batch_probs(x):
        p = average_over_views(probabilities_of, x, tta) if tta != "none" else probabilities_of(x)
        return p.float().cpu()

    probs, targets = _over_batches(loader, device, progress, batch_probs)
    if not probs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def _over_batches(loader, device, progress, step):
    """-> ([step(x) for every batch], [its targets]), the batches moved to `device`, the bar advanced."""
    results, targets = [], []
    for x, y in loader:
        x, _ = _to_device(x, y, device, False)
        results.append(step(x))
        targets.append(y)
        if progress is not None:
            progress.update(len(y))
    if progress is not None:
        progress.close()
    return results, targets


@torch.no_grad()
def predict_outputs(model, loader, device, dtype=None, channels_last=False, tta="none", progress=None):
    """-> (head outputs [n, V, O] float32 for each of the V views of `tta`, targets [n]) as numpy arrays, in
    loader order: what calibration is fitted on (binsight.verify.calibration turns them into probabilities)."""
    model.eval()

    def outputs_per_view(x):
        per_view = []
        for k in views(tta):
            v = dihedral(x, k)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                per_view.append(model(v).float().cpu())
        return torch.stack(per_view, 1)

    outputs, targets = _over_batches(loader, device, progress, outputs_per_view)
    if not outputs:
        return np.zeros((0, len(views(tta)), 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(outputs).numpy(), torch.cat(targets).numpy()


def mean_loss(probs, targets):
    """Cross-entropy of predicted probabilities (what the val loss reports)."""
    picked = probs[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean()) if len(targets) else float("nan")


def evaluate_split(model, loader, parts, num_classes, world=None):
    """Loss, accuracy and a histogram of predicted classes of `model` over a (possibly sharded) split,
    on `parts`' device and precision. The loss is the cross-entropy of the decoded probabilities,
    whatever the training loss."""
    probs, targets = predict(model, loader, parts.device, parts.dtype, parts.channels_last, parts.decode)
    sums = torch.zeros(3 + num_classes, dtype=torch.float64)
    if len(targets):
        preds = probs.argmax(1)
        sums[0] = mean_loss(probs, targets) * len(targets)
        sums[1] = float((preds == targets).sum())
        sums[2] = len(targets)
        sums[3:] = torch.from_numpy(np.bincount(preds, minlength=num_classes)).double()
    if world is not None and world.enabled:
        sums = world.sum(sums.to(parts.device)).cpu()
    n = max(sums[2].item(), 1)
    return sums[0].item() / n, sums[1].item() / n, sums[3:].long().tolist()
