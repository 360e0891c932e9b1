"""--help, the usual mistakes and work with nothing to compute answer before torch is imported:
importing torch and torchvision takes seconds, so a typo must not wait for it."""

import subprocess
import sys

import pytest
import yaml

from tests.support.project import REPO, deep_update, env

pytestmark = pytest.mark.e2e

# Runs the command as `python -m MODULE ARGS...` would, then says on stderr whether torch got imported.
PROBE = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def probe(module, *args):
    return subprocess.run(
        [sys.executable, "-c", PROBE, module, *map(str, args)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def params_file(path, overrides):
    """params.yaml with `overrides` merged in, written to `path`."""
    path.write_text(yaml.safe_dump(deep_update(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)))
    return path


@pytest.mark.parametrize(
    "module,args,status,expected",
    [
        ("binsight.serve.predict_command", ["--help"], 0, "--batch-size"),
        (
            "binsight.serve.predict_command",
            ["--model", "{tmp}/missing.pt", "README.md"],
            2,
            "missing.pt not found: train a model first",
        ),
        (
            "binsight.serve.predict_command",
            ["--model", "{tmp}/missing.pt", "{tmp}/nothing.jpg"],
            2,
            "nothing.jpg not found",
        ),
        ("binsight.serve.predict_command", ["--device", "gpu", "README.md"], 2, "--device 'gpu' is not a device"),
        ("binsight.serve.http_server", ["--help"], 0, "--allow-bucket"),
        ("binsight.serve.http_server", ["--model", "{tmp}/missing.pt"], 2, "missing.pt not found: train a model first"),
        (
            "binsight.serve.http_server",
            ["--device", "cuda:x", "--model", "{tmp}/missing.pt"],
            2,
            "--device 'cuda:x' is not a device",
        ),
        ("stages.train", ["--help"], 0, "--checkpoint"),
        ("stages.train", ["--params", "{bad_lr}"], 2, "lr=-0.1 is not allowed"),
        ("stages.train", ["--split", "{empty_split}"], 2, "train.csv is empty: no bins to train on"),
        (
            "stages.train",
            ["--params", "{aux}", "--split", "{one_bin}", "--images", "{one_bin}", "--metadata", "{tmp}"],
            2,
            "7.json is missing: train.aux_weight reads each training bin's metadata",
        ),
        # a fine-tuned backbone: featurize has nothing to compute, and says so at once
        (
            "stages.featurize",
            ["--params", "{fine_tune}", "--out", "{tmp}/features"],
            0,
            "featurize: nothing to cache (model.freeze_backbone is false",
        ),
    ],
)
def test_help_and_mistakes_answer_without_importing_torch(tmp_path, module, args, status, expected):
    fine_tune = params_file(tmp_path / "fine_tune.yaml", {"model": {"freeze_backbone": False}})
    bad_lr = params_file(tmp_path / "bad_lr.yaml", {"lr": -0.1})
    empty_split = tmp_path / "split"
    empty_split.mkdir()
    (empty_split / "train.csv").write_text("id,label\n")
    aux = params_file(tmp_path / "aux.yaml", {"train": {"aux_weight": 1.0}})
    one_bin = tmp_path / "one_bin"  # a split of one bin whose photo is there and whose metadata is not
    one_bin.mkdir()
    for split in ("train", "val"):
        (one_bin / f"{split}.csv").write_text("id,label\n7,3\n")
    (one_bin / "7.jpg").write_bytes(b"")
    proc = probe(
        module,
        *[
            a.format(
                tmp=tmp_path, bad_lr=bad_lr, fine_tune=fine_tune, empty_split=empty_split, aux=aux, one_bin=one_bin
            )
            for a in args
        ],
    )
    assert proc.returncode == status, proc.stderr
    assert expected in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "torch imported: False", proc.stderr


def test_the_probe_sees_torch_when_a_command_needs_it(tmp_path):
    """The check above could pass by never looking: a command that loads a model does import torch."""
    proc = probe("binsight.serve.predict_command", "--model", REPO / "README.md", REPO / "README.md")
    assert proc.returncode == 2 and "is not a binsight model file" in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "torch imported: True", proc.stderr
