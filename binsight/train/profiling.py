"""A torch.profiler window over the first training steps, written where people can open it."""

from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule


class StepProfiler:
    """Context manager: warm up 1 step, record the next `active` steps; then write trace.json
    (Chrome trace format: Perfetto, chrome://tracing, TensorBoard) and ops.txt (top operators)."""

    def __init__(self, folder, device, active=3):
        self.folder, self.steps, self.written = Path(folder), 0, False
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        self._prof = profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=1, active=active, repeat=1),
            on_trace_ready=self._write,
            profile_memory=True,
            record_shapes=False,
        )

    def _write(self, prof):
        self.folder.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.folder / "trace.json"))
        sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        (self.folder / "ops.txt").write_text(prof.key_averages().table(sort_by=sort, row_limit=25))
        self.written = True

    def step(self):
        self.steps += 1
        self._prof.step()

    def __enter__(self):
        self._prof.__enter__()
        return self

    def __exit__(self, *exc):
        return self._prof.__exit__(*exc)
