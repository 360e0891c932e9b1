"""The shared inference logic: decoding, result dicts, the Predictor, the micro-batching queue, and
the metrics that dvc.lock ties to a model file."""

import csv
import hashlib
import io
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image

from binsight.errors import ConfigError, DataError
from binsight.serve.predictor import BadImage, BatchQueue, Predictor, decode_image, lock_metrics, resolve_device, result
from tests.support.serving import png_bytes, untrained_model
from tests.support.synthetic import draw_bin, jpeg_bytes, make_bins


@pytest.fixture(scope="module")
def bins():
    return {bin_id: (label, jpeg) for bin_id, (label, jpeg, _) in make_bins(3, seed=7).items()}


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor(untrained_model(tmp_path_factory.mktemp("model") / "model.pt"), "cpu")


def test_decode_reads_jpeg_and_png_as_rgb(bins):
    jpeg = next(iter(bins.values()))[1]
    img = decode_image(jpeg, 64)
    assert img.mode == "RGB" and min(img.size) >= 64
    assert decode_image(png_bytes(jpeg), 64).size == img.size


def test_decode_scales_large_jpegs_down_at_decode_time():
    big = jpeg_bytes(draw_bin(3, (1024, 768), random.Random(0)))
    img = decode_image(big, 64)
    assert img.size == (128, 96)  # libjpeg's 1/8 scale: still at least 64 px a side


def gif_bytes():
    buf = io.BytesIO()
    Image.new("RGB", (80, 80), (200, 10, 10)).save(buf, format="GIF")
    return buf.getvalue()


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda jpeg: b"", "empty"),
        (lambda jpeg: b"this is not an image at all", "not a JPEG or PNG"),
        (lambda jpeg: jpeg[: len(jpeg) * 2 // 3], "truncated"),
        (lambda jpeg: jpeg[:200], "does not decode"),
        (lambda jpeg: gif_bytes(), "not a JPEG or PNG"),
    ],
)
def test_decode_refuses_bad_bytes_with_a_reason(bins, make, expected):
    jpeg = next(iter(bins.values()))[1]
    with pytest.raises(BadImage, match=expected):
        decode_image(make(jpeg), 64)


def test_decode_refuses_images_over_the_pixel_limit():
    buf = io.BytesIO()
    Image.new("RGB", (3000, 3000)).save(buf, format="PNG")  # 30 kB of PNG, 9 Mpx once decoded
    with pytest.raises(BadImage, match="3000x3000 pixels"):
        decode_image(buf.getvalue(), 64, max_pixels=4_000_000)


def test_result_names_the_most_likely_count():
    out = result([0.1, 0.2, 0.5, 0.15, 0.05], [1, 2, 3, 4, 5])
    assert out == {
        "count": 3,
        "class": "3",
        "probability": 0.5,
        "probabilities": {"1": 0.1, "2": 0.2, "3": 0.5, "4": 0.15, "5": 0.05},
    }


def test_predictor_reports_the_model_file_hash_and_its_metadata(predictor):
    digest = hashlib.sha256(predictor.path.read_bytes()).hexdigest()
    assert predictor.version == digest[:12]
    meta = predictor.metadata()
    assert meta["classes"] == [1, 2, 3, 4, 5] and meta["image_size"] == 64 and meta["arch"] == "resnet18"
    assert meta["training"] == {"val_acc": 0.2, "epoch": 0}


def test_a_batch_gives_each_image_its_own_answer(predictor, bins):
    images = [jpeg for _, jpeg in bins.values()]
    batched = predictor.predict_bytes(images)
    one_by_one = [predictor.predict_bytes([jpeg])[0] for jpeg in images]
    assert len(batched) == len(images)
    for b, s in zip(batched, one_by_one):
        assert b["count"] == s["count"]
        assert b["probabilities"] == pytest.approx(s["probabilities"], abs=1e-4)
        assert sum(b["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    # Different images, different scores: the seed answered every image the same.
    assert len({tuple(r["probabilities"].values()) for r in batched}) == len(images)


def test_predict_bytes_names_the_bad_image_in_a_batch(predictor, bins):
    good = next(iter(bins.values()))[1]
    with pytest.raises(BadImage, match="image 2: not a JPEG or PNG"):
        predictor.predict_bytes([good, b"garbage", good])


def test_bad_model_files_and_devices_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Predictor(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a binsight model file"):
        Predictor(tmp_path / "junk.pt")
    for name in ("gpu", "mps:1"):  # torch has one MPS device
        with pytest.raises(ConfigError, match="expected auto, cpu"):
            resolve_device(name)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
    for name in ("mps", "mps:0"):  # torch's names for Apple's GPU: a device name, present or not
        if torch.backends.mps.is_available():
            assert resolve_device(name).type == "mps"
        else:
            with pytest.raises(ConfigError, match=f"--device {name}: MPS is not available"):
                resolve_device(name)


def test_queue_batches_concurrent_requests_and_keeps_answers_apart(predictor, bins):
    sizes = []

    def slow_predict(tensors):
        sizes.append(len(tensors))
        time.sleep(0.05)  # a forward pass long enough for requests to pile up behind it
        return predictor.predict_tensors(tensors)

    images = [jpeg for _, jpeg in bins.values()]
    expected = [predictor.predict_bytes([jpeg])[0] for jpeg in images]
    tensors = [predictor.tensor(jpeg) for jpeg in images]
    q = BatchQueue(slow_predict, max_batch=8)
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = list(pool.map(lambda i: q.submit([tensors[i % len(tensors)]])[0], range(48)))
            got = [f.result(timeout=30) for f in futures]
        multi = q.submit(tensors)  # one request with many images: split into max_batch chunks
        got_multi = [f.result(timeout=30) for f in multi]
    finally:
        q.close()
    for i, r in enumerate(got):
        assert r["count"] == expected[i % len(images)]["count"]
        assert r["probabilities"] == pytest.approx(expected[i % len(images)]["probabilities"], abs=1e-4)
    assert [r["count"] for r in got_multi] == [e["count"] for e in expected]
    singles, chunks = sizes[:-2], sizes[-2:]
    assert sum(singles) == 48 and max(singles) <= 8
    assert len(singles) <= 24, f"concurrent requests were hardly batched together: {singles}"
    assert chunks == [8, len(images) - 8]


def test_queue_hands_a_failure_to_the_waiting_requests_and_keeps_working():
    calls = []

    def flaky(tensors):
        calls.append(len(tensors))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [{"count": int(t)} for t in tensors]

    q = BatchQueue(flaky)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            q.submit([torch.tensor(1)])[0].result(timeout=10)
        assert q.submit([torch.tensor(4)])[0].result(timeout=10) == {"count": 4}
    finally:
        q.close()


@pytest.mark.slow
def test_predictor_matches_the_evaluate_stage_on_the_test_split(trained_project):
    """Same decode, same resize, same normalisation: the evaluate stage's predictions come back."""
    predictor = Predictor(trained_project / "models/model.pt", "cpu")
    rows = list(csv.DictReader(open(trained_project / "data/predictions/test.csv")))
    images = [(trained_project / f"data/raw/images/{r['id']}.jpg").read_bytes() for r in rows]
    got = predictor.predict_bytes(images)
    agree = sum(int(r["pred"]) == g["count"] for r, g in zip(rows, got))
    assert agree == len(rows)
    for r, g in zip(rows, got):
        assert g["probabilities"] == pytest.approx({c: float(r[f"p{c}"]) for c in "12345"}, abs=1e-3)


@pytest.mark.slow
def test_metrics_are_shown_only_for_the_model_dvc_lock_records(trained_project, tmp_path):
    found = lock_metrics(trained_project / "models/model.pt", trained_project / "dvc.lock")
    assert found["dvclive/evaluate"] == json.loads((trained_project / "dvclive/evaluate/metrics.json").read_text())
    assert found["dvclive/train"] == json.loads((trained_project / "dvclive/train/metrics.json").read_text())
    # Another model file (retrained, copied in by hand): dvc.lock no longer vouches for these metrics.
    other = untrained_model(tmp_path / "model.pt")
    assert lock_metrics(other, trained_project / "dvc.lock") == {}
    assert lock_metrics(other, tmp_path / "no-such.lock") == {}


def test_predictor_is_safe_to_call_from_many_threads(predictor, bins):
    images = [jpeg for _, jpeg in bins.values()]
    expected = [predictor.predict_bytes([j])[0]["count"] for j in images]
    errors = []

    def hammer(k):
        try:
            for i in range(5):
                j = (k + i) % len(images)
                assert predictor.predict_bytes([images[j]])[0]["count"] == expected[j]
        except Exception as exc:  # collected: an assertion in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_an_open_ended_class_is_named_with_a_plus():
    out = result([0.1, 0.2, 0.7], [0, 5, 6], ["0", "5", "6+"])
    assert (out["count"], out["class"]) == (6, "6+") and out["probabilities"] == {"0": 0.1, "5": 0.2, "6+": 0.7}
