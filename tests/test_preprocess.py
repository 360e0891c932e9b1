"""One preprocessing contract: the model file records image size, resize, JPEG draft decode,
mean/std and TTA, and evaluate's loader and the Predictor (predict, serve) prepare a photo alike,
checked on real ABID photos large enough (300-800 px) for draft decoding to change the pixels."""

import torch

from binsight.data.image_datasets import IMAGENET_MEAN, IMAGENET_STD
from binsight.evaluate.scoring import split_loader
from binsight.model.counting_model import build_model, load_model, preprocessing, save_model
from binsight.params import check_model
from binsight.serve.predictor import Predictor
from tests.support.bucket import REAL_SAMPLE

SIZE = 64
PARAMS = {
    "arch": "resnet18",
    "weights": "none",
    "freeze_backbone": False,
    "head": {"hidden": [], "dropout": 0.0},
    "tta": "none",
}


def model_file(path, jpeg_draft):
    torch.manual_seed(0)
    save_model(
        path,
        build_model("resnet18", "none", 5),
        [1, 2, 3, 4, 5],
        check_model(PARAMS),
        SIZE,
        preprocess=preprocessing(SIZE, jpeg_draft, "none"),
    )
    return path


def test_the_model_file_records_the_whole_contract(tmp_path):
    _, meta = load_model(model_file(tmp_path / "m.pt", jpeg_draft=False))
    pre = meta["preprocess"]
    assert pre["image_size"] == SIZE and pre["jpeg_draft"] is False and pre["tta"] == "none"
    assert pre["mean"] == list(IMAGENET_MEAN) and pre["std"] == list(IMAGENET_STD) and "bilinear" in pre["resize"]


def test_evaluate_and_predict_prepare_large_real_photos_alike_in_both_decode_modes(tmp_path):
    photos = sorted((REAL_SAMPLE / "bin-images").glob("*.jpg"))[:6]
    rows = [(p.stem, 1) for p in photos]
    seen = {}
    for draft in (True, False):
        path = model_file(tmp_path / f"draft_{draft}.pt", draft)
        _, meta = load_model(path)
        loader = split_loader(rows, REAL_SAMPLE / "bin-images", meta, 8, 0, torch.device("cpu"))
        evaluated = torch.cat([x for x, _ in loader])
        predictor = Predictor(path, device="cpu")
        predicted = torch.stack([predictor.tensor(p.read_bytes()) for p in photos])
        assert torch.equal(evaluated, predicted), f"jpeg_draft={draft}: evaluate and predict differ"
        seen[draft] = evaluated
    # the photos are large enough for draft decoding to act: the two contracts really differ
    assert (seen[True] - seen[False]).abs().max() > 0.05
