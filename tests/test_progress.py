"""Progress in long loops: plain lines every N batches when not on a terminal (what `dvc repro`
logs capture), a tqdm bar with img/s and ETA on a terminal, nothing on other ranks."""

import io
import re

from binsight.progress import Progress


def test_plain_lines_every_n_batches_and_at_the_end():
    out = io.StringIO()
    bar = Progress("train epoch 1/3", 100, stream=out, every=2)
    for _ in range(5):
        bar.update(20)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines  # after batches 2 and 4, and the last one
    assert re.fullmatch(r"train epoch 1/3: 40/100 images, \d+ img/s, ETA \d+m\d\ds", lines[0]), lines
    assert lines[-1].startswith("train epoch 1/3: 100/100 images")


def test_other_ranks_print_nothing():
    out = io.StringIO()
    bar = Progress("evaluate", 10, enabled=False, stream=out, every=1)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a shell's stderr does."""

    def isatty(self):
        return True


def test_a_terminal_gets_a_bar_with_rate_and_eta():
    tty = Terminal()
    bar = Progress("featurize", 64, stream=tty, every=1, mininterval=0)
    assert bar.bar is not None
    for _ in range(4):
        bar.update(16)
    bar.close()
    shown = tty.getvalue()
    assert "featurize" in shown and "img/s" in shown and re.search(r"[1-9]\d*/64 \[\d\d:\d\d<\d\d:\d\d", shown), shown
    assert not re.search(r"^featurize: \d+/64 images", shown, re.M)  # the bar, not the plain lines


def test_the_train_stage_logs_progress_lines_under_dvc(tmp_path):
    """The real train stage, output captured as `dvc repro` captures it: progress lines appear."""
    from tests.support.dataset import SMALL_MODEL, write_dataset
    from tests.support.project import call, git_commit, make_project

    proj = make_project(
        tmp_path / "proj",
        params={
            "model": SMALL_MODEL,
            "train": {"epochs": 1, "batch_size": 8, "image_size": 32, "num_workers": 0, "cache_images": True},
        },
        commit=False,
    )
    write_dataset(proj, n_per_class=4)
    git_commit(proj, "tiny")
    proc = call("stages.train", cwd=proj, BINSIGHT_LOG_EVERY="1")
    assert re.search(r"train epoch 1/1: 8/\d+ images, \d+ img/s, ETA", proc.stdout), proc.stdout
    assert "img/s" not in proc.stderr  # stderr is for errors only
