"""Training and inference loops, device and mixed-precision choices. No I/O, no params files."""
import random
import time
from dataclasses import dataclass

import numpy as np
import torch


def pick_device():
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def amp_dtype(setting, device):
    """The autocast dtype for `train.amp` on this device; None = full precision (always on CPU)."""
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "bf16" or (setting == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


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


def train_one_epoch(model, loader, optimizer, criterion, device, dtype=None, scaler=None, channels_last=False):
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, data_wait = 0, 0.0
    start = tick = time.perf_counter()
    for x, y in loader:
        data_wait += time.perf_counter() - tick
        x, y = _to_device(x, y, device, channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        # Accumulate on the device: one sync per epoch instead of one per step.
        loss_sum += loss.detach().float() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        tick = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return EpochStats(loss_sum.item() / max(seen, 1), correct.item() / max(seen, 1), seen,
                      time.perf_counter() - start, data_wait)


@torch.no_grad()
def predict(model, loader, device, dtype=None, channels_last=False):
    """-> (probabilities [n, classes] float32, targets [n]) as numpy arrays, in loader order."""
    model.eval()
    probs, targets = [], []
    for x, y in loader:
        x, _ = _to_device(x, y, device, channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        targets.append(y)
    if not probs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def mean_loss(probs, targets):
    """Cross-entropy of predicted probabilities (what the val loss reports)."""
    picked = probs[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean()) if len(targets) else float("nan")
