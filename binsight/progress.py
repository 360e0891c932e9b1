"""Progress inside long loops (training epochs, evaluate, featurize).

On a terminal: a tqdm bar with images/s and an ETA. Otherwise (`dvc repro` and queued experiments
capture the output): one plain line every N batches (env BINSIGHT_LOG_EVERY, default 50) and one
at the end, so a log shows the run is alive and how fast it goes. Off on all but the main process.
"""

import os
import sys
import time

from tqdm import tqdm

LOG_EVERY = "BINSIGHT_LOG_EVERY"


def log_every():
    try:
        return max(1, int(os.environ.get(LOG_EVERY, "50")))
    except ValueError:
        return 50


class Progress:
    def __init__(self, desc, total_images, enabled=True, stream=None, every=None, mininterval=0.1):
        self.desc, self.total, self.enabled = desc, total_images, enabled
        # A bar on the terminal's stderr; plain lines on stdout, so that stderr keeps only errors
        # (a failing stage still ends with one `error: ...` line there).
        self.stream = stream or (sys.stderr if sys.stderr.isatty() else sys.stdout)
        self.every = every or log_every()
        self.done = self.batches = 0
        self.start = time.perf_counter()
        self.bar = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(
                total=total_images,
                desc=desc,
                unit="img",
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
                smoothing=0.1,
                mininterval=mininterval,
            )

    def update(self, images):
        if not self.enabled:
            return
        self.done += images
        self.batches += 1
        if self.bar is not None:
            self.bar.update(images)
        elif self.batches % self.every == 0:
            self.line()

    def line(self):
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 and self.total else 0.0
        print(
            f"{self.desc}: {self.done}/{self.total} images, {rate:.0f} img/s, "
            f"ETA {int(left // 60)}m{int(left % 60):02d}s",
            file=self.stream,
            flush=True,
        )

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.batches % self.every:
            self.line()
