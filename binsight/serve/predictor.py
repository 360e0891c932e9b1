"""Inference on a saved model: image bytes -> count and scores per count. Shared by predict and serve.

A `Predictor` loads the model file once and prepares images exactly as evaluate does, by the
model file's preprocessing contract (decode mode, image size, normalisation, test-time
augmentation), so the CLI, the server and the test-split predictions agree. A `BatchQueue` gathers
single-image requests from many threads into one forward pass.
"""

from __future__ import annotations

import hashlib
import io
import json
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image, UnidentifiedImageError

from binsight.data.image_datasets import eval_transform
from binsight.data.image_decode import load_rgb
from binsight.data.square_views import TTA_MODES, average_over_views
from binsight.errors import BadImage, ConfigError, DataError, check_device_name
from binsight.model.count_losses import decode
from binsight.model.counting_model import load_model
from binsight.train.loops import amp_dtype, pick_device
from binsight.verify.calibration_record import Calibration
from binsight.verify.count_sets import count_set
from binsight.verify.quantity_check import verdict

FORMATS = ("JPEG", "PNG")
# Far above any bin photo, far below what would exhaust memory; JPEGs count after draft scaling.
MAX_PIXELS = 40_000_000


def file_digest(path, algorithm="sha256"):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def decode_image(data, size, max_pixels=MAX_PIXELS):
    """JPEG or PNG bytes -> an RGB PIL image, fully decoded the way evaluate decodes files
    (binsight.data.image_decode.load_rgb), so results match. Raises BadImage saying why not."""
    if not data:
        raise BadImage("empty body: expected JPEG or PNG bytes")
    try:
        return load_rgb(io.BytesIO(data), size, FORMATS, max_pixels)
    except UnidentifiedImageError:
        raise BadImage("not a JPEG or PNG image") from None
    except DataError as exc:
        raise BadImage(str(exc)) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImage(f"image does not decode: {exc}") from None


def result(probs, classes, names=None, set_threshold=None):
    """One row of class probabilities -> {"count", "class", "probability", "probabilities": {"1": ..}}, and
    with a calibrated model's `set_threshold` the "count_set": the counts that hold the true one at the
    model's coverage (binsight.verify.count_sets). "class" is the class's name ("6+" for "6 or more" under
    classes.policy clip; else the count)."""
    probs = [float(p) for p in probs]
    names = names or [str(c) for c in classes]
    best = max(range(len(probs)), key=probs.__getitem__)
    out = {
        "count": int(classes[best]),
        "class": names[best],
        "probability": round(probs[best], 6),
        "probabilities": {n: round(p, 6) for n, p in zip(names, probs)},
    }
    if set_threshold is not None:
        out["count_set"] = count_set(probs, classes, set_threshold)
    return out


def lock_metrics(model_path, lock_path="dvc.lock"):
    """The dvclive metrics that `dvc repro` produced from this very model file: {path: metrics}.
    Trusted only when dvc.lock records the model file's current md5 (else they may be stale).
    Paths in dvc.lock are relative to its folder."""
    model_path, lock_path = Path(model_path), Path(lock_path)
    root = lock_path.parent
    if not lock_path.exists() or not model_path.exists():
        return {}
    try:
        lock = yaml.safe_load(lock_path.read_text()) or {}
    except yaml.YAMLError:
        return {}
    stages = list((lock.get("stages") or {}).values())
    # this model file, and the model files it was made from (evaluate's models/model.pt from train's
    # models/trained.pt): the metrics of every stage that made or read one of them
    vouched = {file_digest(model_path, "md5")}
    for _ in range(len(stages)):
        more = (
            {
                dep.get("md5")
                for stage in stages
                if any(out.get("md5") in vouched for out in stage.get("outs") or [])
                for dep in stage.get("deps") or []
                if str(dep.get("path", "")).endswith(".pt")
            }
            - vouched
            - {None}
        )
        if not more:
            break
        vouched |= more
    found = {}
    for stage in stages:
        entries = (stage.get("deps") or []) + (stage.get("outs") or [])
        if not any(e.get("md5") in vouched for e in entries):
            continue
        for out in stage.get("outs") or []:
            metrics = root / out.get("path", "") / "metrics.json"
            if metrics.is_file():
                try:
                    found[out["path"]] = json.loads(metrics.read_text())
                except (OSError, ValueError):
                    pass
    return found


def resolve_device(name: str | None = None) -> torch.device:
    """A torch device from a user's --device (None or "auto": the GPU when there is one)."""
    check_device_name(name)
    if not name or name == "auto":
        return pick_device()
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is visible (use cpu or auto)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {name}: MPS is not available here (use cpu or auto)")
    return device


class Predictor:
    """A model loaded once; thread-safe predictions on decoded images or raw bytes."""

    def __init__(
        self,
        model_path: str | Path,
        device: str | None = None,
        max_pixels: int = MAX_PIXELS,
        tta: str | None = None,
        coverage: float | None = None,
        max_false_accept: float | None = None,
    ) -> None:
        self.path = Path(model_path)
        self.device = resolve_device(device)
        self.model, self.meta = load_model(self.path, self.device)
        self.classes = list(self.meta["classes"])
        self.names = list(self.meta.get("class_names") or [str(c) for c in self.classes])
        self.preprocess = self.meta["preprocess"]
        self.image_size = int(self.preprocess["image_size"])
        self.draft_size = self.image_size if self.preprocess["jpeg_draft"] else None
        self.tta = tta or self.preprocess["tta"]  # the model file's test-time augmentation unless overridden
        if self.tta not in TTA_MODES:
            raise ConfigError(f"--tta {self.tta!r}: expected one of {', '.join(TTA_MODES)}")
        # the calibration evaluate fitted on val (None in a model file straight from train), with
        # its thresholds moved to other targets when asked
        saved = self.meta.get("calibration")
        self.calibration = Calibration.from_dict(saved).retarget(coverage, max_false_accept) if saved else None
        if self.calibration is None and (coverage is not None or max_false_accept is not None):
            raise ConfigError(f"{self.path} is not calibrated: use models/model.pt, which `dvc repro evaluate` writes")
        scale = self.calibration.scale if self.calibration else None
        self.decode = partial(decode, self.meta["loss"], num_classes=len(self.classes), scale=scale)
        self.version = file_digest(self.path)[:12]
        self.max_pixels = max_pixels
        self._transform = eval_transform(self.image_size)
        self._dtype = amp_dtype("auto", self.device)
        self._lock = threading.Lock()

    def tensor(self, data: bytes) -> torch.Tensor:
        """Image bytes -> a normalised [3, size, size] tensor. Raises BadImage."""
        return self._transform(decode_image(data, self.draft_size, self.max_pixels))

    def predict_tensors(self, tensors: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        """A list of image tensors -> a list of result dicts, in order, in one forward pass."""
        if not tensors:
            return []
        x = torch.stack(list(tensors)).to(self.device)
        # One forward at a time: concurrent forwards on one model only fight over the same cores.
        with (
            self._lock,
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self._dtype or torch.float32, enabled=self._dtype is not None),
        ):
            probs = average_over_views(lambda v: self.decode(self.model(v)), x, self.tta).float().cpu().tolist()
        threshold = self.calibration.set_threshold if self.calibration else None
        return [result(p, self.classes, self.names, threshold) for p in probs]

    def verdict(self, res: dict[str, Any], expected: int) -> dict[str, Any]:
        """A result of predict_tensors and an expected quantity -> its verdict (binsight.verify.quantity_check):
        accept when P(count = expected) reaches the model's threshold, else review, with the reason."""
        if self.calibration is None:
            raise ConfigError(f"{self.path} is not calibrated: use models/model.pt, which `dvc repro evaluate` writes")
        probs = [res["probabilities"][n] for n in self.names]
        return verdict(
            probs, self.classes, self.names, expected, self.calibration.accept_threshold, res.get("count_set", [])
        )

    def predict_bytes(self, images: Sequence[bytes]) -> list[dict[str, Any]]:
        """A list of image bytes -> result dicts. Raises BadImage naming the position of a bad one."""
        tensors = []
        for i, data in enumerate(images):
            try:
                tensors.append(self.tensor(data))
            except BadImage as exc:
                raise BadImage(f"image {i + 1}: {exc}" if len(images) > 1 else str(exc)) from None
        return self.predict_tensors(tensors)

    def metadata(self) -> dict[str, Any]:
        params = self.meta.get("model", {})
        return {
            "model": self.version,
            "file": self.path.name,
            "classes": self.classes,
            "class_names": self.names,
            "image_size": self.image_size,
            "arch": params.get("arch"),
            "params": params,
            "loss": self.meta["loss"],
            "preprocess": {**self.preprocess, "tta": self.tta},
            "training": {k: self.meta[k] for k in ("val_acc", "epoch") if k in self.meta},
            # the fitted numbers, without the val probabilities they came from
            "calibration": None
            if self.calibration is None
            else {k: v for k, v in self.calibration.as_dict().items() if k not in ("val_probs", "val_labels")},
        }


class BatchQueue:
    """Micro-batching: `submit(tensors)` from any thread returns one Future per tensor; one worker
    thread runs whatever has queued up meanwhile as one forward pass (at most `max_batch` images,
    waiting up to `max_wait` s for more). Under load, requests that arrive during a forward pass
    share the next one; the images of one request always travel together."""

    def __init__(self, predict_tensors, max_batch=32, max_wait=0.0):
        self._predict, self.max_batch, self.max_wait = predict_tensors, max_batch, max_wait
        self._queue = queue.Queue()
        self.batches = 0  # forward passes run, for /health and tests
        self._thread = threading.Thread(target=self._work, name="batch-queue", daemon=True)
        self._thread.start()

    def submit(self, tensors):
        job = [(t, Future()) for t in tensors]
        self._queue.put(job)
        return [f for _, f in job]

    def close(self):
        self._queue.put(None)
        self._thread.join(timeout=10)

    def alive(self):
        """True while the worker thread that runs the forward passes is running."""
        return self._thread.is_alive()

    def _gather(self, pending):
        """Add queued jobs to `pending` until it holds `max_batch` images; False once told to stop."""
        deadline = time.monotonic() + self.max_wait
        while len(pending) < self.max_batch:
            try:
                wait = deadline - time.monotonic()
                job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                return True
            if job is None:
                return False
            pending.extend(job)
        return True

    def _run(self, batch):
        batch = [(t, f) for t, f in batch if f.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            results = self._predict([t for t, _ in batch])
        except Exception as exc:  # hand the failure to every waiting request, keep serving
            for _, f in batch:
                f.set_exception(exc)
            return
        self.batches += 1
        for (_, f), r in zip(batch, results):
            f.set_result(r)

    def _work(self):
        running = True
        while running:
            job = self._queue.get()
            if job is None:
                return
            pending = list(job)
            running = self._gather(pending)
            for i in range(0, len(pending), self.max_batch):
                self._run(pending[i : i + self.max_batch])
