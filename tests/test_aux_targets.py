"""The metadata targets of train.aux_weight: what is read from a bin's metadata, the loss term, and
the second head that trains beside the count but stays out of the model file."""

import json
import math

import pytest
import torch

from binsight.data.abid_format import parse_metadata
from binsight.errors import ConfigError, DataError
from binsight.model.aux_targets import AUX_OUTPUTS, aux_targets, read_aux_targets
from binsight.model.count_losses import AuxTargetLoss, CountingLoss, standardizer
from binsight.model.counting_model import build_model, load_model, save_model
from binsight.params import ModelParams, TrainParams, check_model, check_train_with_model


def sku(qty, length=2.0, width=3.0, height=4.0, weight=0.5):
    size = {"length": length, "width": width, "height": height}
    return {
        "quantity": qty,
        **{k: None if v is None else {"unit": "IN", "value": v} for k, v in size.items()},
        "weight": None if weight is None else {"unit": "pounds", "value": weight},
    }


def meta(*skus):
    items = {f"B{i:09d}": s for i, s in enumerate(skus)}
    return parse_metadata(
        json.dumps({"BIN_FCSKU_DATA": items, "EXPECTED_QUANTITY": sum(s["quantity"] for s in skus)}).encode()
    )


def test_products_volume_and_weight_are_read_from_the_metadata():
    products, volume, weight = aux_targets(meta(sku(2), sku(1, 1.0, 1.0, 10.0, 2.0)))
    assert products == 1  # two products listed: class index 1
    assert volume == pytest.approx(math.log(2 * 24 + 10))
    assert weight == pytest.approx(math.log(2 * 0.5 + 2.0))


def test_a_missing_measurement_leaves_that_total_unknown_and_many_products_count_as_five():
    products, volume, weight = aux_targets(meta(sku(1, height=None), *[sku(1) for _ in range(6)]))
    assert products == 4 and math.isnan(volume) and weight == pytest.approx(math.log(3.5))
    products, volume, weight = aux_targets(meta(sku(1, weight=None)))
    assert products == 0 and volume == pytest.approx(math.log(24)) and math.isnan(weight)
    empty = parse_metadata(b'{"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": 0}')
    assert aux_targets(empty)[0] == 0 and math.isnan(aux_targets(empty)[1]) and math.isnan(aux_targets(empty)[2])


def test_reading_names_a_missing_or_unreadable_metadata_file(tmp_path):
    (tmp_path / "1.json").write_text(json.dumps({"BIN_FCSKU_DATA": {"B1": sku(3)}, "EXPECTED_QUANTITY": 3}))
    assert read_aux_targets([("1", 3)], tmp_path) == [aux_targets(meta(sku(3)))]
    with pytest.raises(DataError, match=r"2\.json is missing: .*set train\.aux_weight: 0"):
        read_aux_targets([("1", 3), ("2", 1)], tmp_path)
    (tmp_path / "3.json").write_text("{not json")
    with pytest.raises(DataError, match=r"3\.json: metadata is not valid JSON"):
        read_aux_targets([("3", 1)], tmp_path)


def test_the_loss_adds_the_metadata_term_skips_unknown_totals_and_is_the_counting_loss_on_val():
    torch.manual_seed(0)
    nan = float("nan")
    targets = torch.tensor([[0.0, 1.0, 2.0], [1.0, 3.0, 4.0], [2.0, 9.0, nan], [4.0, nan, nan]])
    mean, std = standardizer(targets)  # over the rows with both totals
    assert mean.tolist() == pytest.approx([2.0, 3.0]) and std.tolist() == pytest.approx([2**0.5] * 2)
    counting = CountingLoss("ce", 5)
    loss = AuxTargetLoss(counting, 5, 1.0, mean, std)
    outputs = torch.randn(4, 5 + AUX_OUTPUTS, requires_grad=True)
    counts = torch.tensor([0, 2, 4, 1])
    assert torch.equal(loss(outputs, counts), counting(outputs[:, :5], counts))  # val: no aux targets
    with_aux = loss(outputs, counts, targets)
    assert torch.isfinite(with_aux) and with_aux > counting(outputs[:, :5], counts)
    with_aux.backward()
    assert outputs.grad[:, 5:].abs().sum() > 0
    assert outputs.grad[3, 10:].abs().sum() == 0  # both totals unknown: no pull on that row's regressions
    assert outputs.grad[2, 10] != 0 and outputs.grad[2, 11] == 0  # the known one pulls, the unknown one not


def test_the_second_head_trains_beside_the_count_and_stays_out_of_the_model_file(tmp_path):
    torch.manual_seed(0)
    params = {
        "arch": "resnet18",
        "weights": "none",
        "freeze_backbone": False,
        "width": 0.25,
        "head": {"hidden": [], "dropout": 0.0},
    }
    model = build_model("resnet18", "none", 5, width=0.25, aux_outputs=AUX_OUTPUTS).eval()
    x = torch.randn(2, 3, 32, 32)
    outputs = model(x)
    assert outputs.shape == (2, 5 + AUX_OUTPUTS)
    save_model(tmp_path / "m.pt", model, [1, 2, 3, 4, 5], check_model(params), 32)
    saved = torch.load(tmp_path / "m.pt", weights_only=False)["state_dict"]
    assert not any(k.startswith("aux.") for k in saved) and "head.0.weight" in saved
    loaded, _ = load_model(tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x), outputs[:, :5].detach())


def test_both_loaders_serve_each_image_with_its_own_metadata_targets(tmp_path):
    """Decoded every epoch (BinImages through a DataLoader) or kept in memory (InMemoryBatches): the
    third element of a batch is the aux rows of the same bins as the images and counts, in order."""
    from binsight.data.image_datasets import BinImages, InMemoryBatches, InMemoryImages, eval_transform, make_loader
    from binsight.data.split_files import read_split
    from binsight.train.distributed import ShardSampler
    from tests.support.dataset import write_dataset

    write_dataset(tmp_path, n_per_class=3)
    rows = read_split(tmp_path / "data/split", "train", tmp_path / "data/raw/images")
    aux = torch.tensor(read_aux_targets(rows, tmp_path / "data/raw/metadata"))
    expected = [
        aux_targets(parse_metadata((tmp_path / f"data/raw/metadata/{i}.json").read_bytes()))[0] for i, _ in rows
    ]
    classes = [1, 2, 3, 4, 5]
    sampler = ShardSampler(len(rows), 0, 1, shuffle=True, seed=3)
    order = list(sampler)
    decoded = BinImages(rows, tmp_path / "data/raw/images", classes, eval_transform(32), 32, aux=aux)
    cached = InMemoryImages(rows, tmp_path / "data/raw/images", classes, 32, aux=aux)
    for loader in (make_loader(decoded, 4, False, 0, False, sampler=sampler), InMemoryBatches(cached, 4, sampler)):
        batches = list(loader)
        assert all(len(b) == 3 for b in batches)
        products = torch.cat([b[2][:, 0] for b in batches]).tolist()
        counts = torch.cat([b[1] for b in batches]).tolist()
        assert products == [expected[i] for i in order]
        assert counts == [rows[i][1] - 1 for i in order]


def test_a_frozen_backbone_with_metadata_targets_is_refused_with_the_fix():
    check_train_with_model(ModelParams(freeze_backbone=False), TrainParams(aux_weight=1.0))
    check_train_with_model(ModelParams(freeze_backbone=True), TrainParams(aux_weight=0.0))
    with pytest.raises(ConfigError, match=r"needs model\.freeze_backbone: false.*set train\.aux_weight: 0"):
        check_train_with_model(ModelParams(freeze_backbone=True), TrainParams(aux_weight=1.0))
