"""Test-time augmentation: a flipped or rotated photo gets the same answer as the photo itself
when the model averages over the dihedral views, through the Predictor that predict and serve use."""

import io
import random

import pytest
import torch
from PIL import Image

from binsight.data.square_views import average_over_views, dihedral, views
from binsight.model.counting_model import build_model, preprocessing, save_model
from binsight.params import check_model
from binsight.serve.predictor import Predictor
from tests.support.synthetic import draw_bin


def test_dihedral_views_are_the_eight_symmetries_of_a_square():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    seen = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(seen) == 8
    assert torch.equal(dihedral(x, 4), x.flip(-1)) and torch.equal(dihedral(x, 2), x.flip(-1).flip(-2))
    assert set(views("flips")) <= set(views("dihedral")) and views("none") == (0,)


def test_average_over_views_is_invariant_under_any_view():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    probs = lambda v: torch.softmax(net(v), 1)  # noqa: E731
    x = torch.randn(2, 3, 8, 8)
    ref = average_over_views(probs, x, "dihedral")
    assert not torch.allclose(probs(x), probs(dihedral(x, 1)), atol=1e-4)  # the net itself is not invariant
    for k in range(8):
        assert torch.allclose(average_over_views(probs, dihedral(x, k), "dihedral"), ref, atol=1e-5)


def png(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained resnet18 (seeded) saved with TTA dihedral: invariance must come from TTA alone."""
    torch.manual_seed(3)
    model = build_model("resnet18", "none", 5).eval()
    path = tmp_path_factory.mktemp("tta") / "model.pt"
    params = {
        "arch": "resnet18",
        "weights": "none",
        "freeze_backbone": False,
        "head": {"hidden": [], "dropout": 0.0},
        "tta": "dihedral",
    }
    save_model(path, model, [1, 2, 3, 4, 5], check_model(params), 64, preprocess=preprocessing(64, True, "dihedral"))
    return path


@pytest.mark.parametrize(
    "transpose",
    [
        Image.Transpose.FLIP_LEFT_RIGHT,
        Image.Transpose.FLIP_TOP_BOTTOM,
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_180,
        Image.Transpose.ROTATE_270,
        Image.Transpose.TRANSPOSE,
    ],
)
def test_flipped_or_rotated_photo_gets_the_same_tta_answer(model_file, transpose):
    photo = draw_bin(3, (96, 96), random.Random(1))
    turned = photo.transpose(transpose)
    with_tta = Predictor(model_file, device="cpu")
    assert with_tta.tta == "dihedral"  # taken from the model file
    a, b = with_tta.predict_bytes([png(photo), png(turned)])
    assert a["count"] == b["count"]
    assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)
    # without TTA the same untrained model does see a difference: the test above is not vacuous
    single = Predictor(model_file, device="cpu", tta="none")
    c, d = single.predict_bytes([png(photo), png(turned)])
    assert max(abs(c["probabilities"][k] - d["probabilities"][k]) for k in c["probabilities"]) > 1e-4


def test_tta_mode_comes_from_the_model_file_unless_overridden(model_file):
    meta = Predictor(model_file, device="cpu").metadata()
    assert meta["preprocess"]["tta"] == "dihedral" and meta["preprocess"]["image_size"] == 64
    assert Predictor(model_file, device="cpu", tta="flips").metadata()["preprocess"]["tta"] == "flips"
    with pytest.raises(Exception, match="expected one of none, flips, dihedral"):
        Predictor(model_file, device="cpu", tta="rot45")
