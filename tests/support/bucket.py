"""Fill a local S3 server with an ABID-shaped bucket: generated bins, the 27 real sample bins
shipped in tests/data/abid_sample, and planted faults, all readable anonymously in the real key layout."""

import http.client
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import boto3

from tests.support.synthetic import file_list, make_bins

REPO = Path(__file__).resolve().parents[2]
REAL_SAMPLE = REPO / "tests" / "data" / "abid_sample"
SUBSET_LIST = REPO / "abid" / "file_list.json"
BUCKET = "aft-vbi-pds"


def admin_client(url):
    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )


@dataclass
class Bucket:
    url: str
    name: str
    clean: dict = field(default_factory=dict)  # {id: label}: generated bins, all good
    real: dict = field(default_factory=dict)  # {id: label}: real ABID sample bins (1..5 items)
    faults: dict = field(default_factory=dict)  # {id: label listed}: planted problems
    expected_bad: dict = field(default_factory=dict)  # {id: reason the fetch must report}
    images: dict = field(default_factory=dict)  # {id: jpeg bytes} of everything uploaded

    def file_list(self, *groups):
        labels = {}
        for group in groups:
            labels.update(group)
        return file_list(labels)

    def write_file_list(self, path, *groups):
        Path(path).write_text(json.dumps(self.file_list(*groups), indent=1))
        return path


def put(client, bucket, key, body):
    client.put_object(Bucket=bucket, Key=key, Body=body, ACL="public-read")


class Filler:
    """fill(key, body): the object boto3's put_object(ACL="public-read") writes, sent as one unsigned PUT
    (the local server takes any credentials) over one kept-alive connection. Each worker fills its buckets
    with hundreds of objects, and this costs half the CPU of boto3's client (signing, events, retries); the
    code under test still reads them through boto3 and dvc-s3."""

    def __init__(self, url, bucket):
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.bucket = bucket

    def __call__(self, key, body):
        self.connection.request("PUT", f"/{self.bucket}/{quote(key)}", body=body, headers={"x-amz-acl": "public-read"})
        response = self.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"PUT {self.bucket}/{key}: {response.status} {answer[:200]!r}")

    def close(self):
        self.connection.close()


def build_bucket(url, n_per_class=40, seed=0, name=BUCKET):
    client = admin_client(url)
    client.create_bucket(Bucket=name)
    fill = Filler(url, name)
    b = Bucket(url=url, name=name)
    for bin_id, (label, jpeg, meta) in make_bins(n_per_class, seed=seed).items():
        fill(f"bin-images/{bin_id}.jpg", jpeg)
        fill(f"metadata/{bin_id}.json", meta)
        b.clean[bin_id] = label
        b.images[bin_id] = jpeg

    # Planted faults: each listed in the file list, each must be reported and excluded.
    faulty = make_bins(1, seed=seed + 1, first_id=900000, classes=(3, 2, 4, 1, 5))
    (
        (trunc, (l1, j1, m1)),
        (wrong, (l2, j2, m2)),
        (noimg, (l3, _, m3)),
        (nometa, (l4, j4, _)),
        (badjson, (l5, j5, _)),
    ) = faulty.items()
    fill(f"bin-images/{trunc}.jpg", j1[: len(j1) // 2])
    fill(f"metadata/{trunc}.json", m1)
    fill(f"bin-images/{wrong}.jpg", j2)
    fill(f"metadata/{wrong}.json", m2.replace(b'"EXPECTED_QUANTITY": 2', b'"EXPECTED_QUANTITY": 4'))
    fill(f"metadata/{noimg}.json", m3)
    fill(f"bin-images/{nometa}.jpg", j4)
    fill(f"bin-images/{badjson}.jpg", j5)
    fill(f"metadata/{badjson}.json", b'{"BIN_FCSKU_DATA": {"x": ')
    b.faults = {trunc: l1, wrong: l2, noimg: l3, nometa: l4, badjson: l5}
    b.expected_bad = {
        trunc: "corrupt_image",
        wrong: "label_mismatch",
        noimg: "missing_image",
        nometa: "missing_metadata",
        badjson: "unreadable_metadata",
    }

    # The real sample bins, byte for byte.
    for meta_path in sorted((REAL_SAMPLE / "metadata").glob("*.json")):
        bin_id = meta_path.stem
        jpeg = (REAL_SAMPLE / "bin-images" / f"{bin_id}.jpg").read_bytes()
        fill(f"bin-images/{bin_id}.jpg", jpeg)
        fill(f"metadata/{bin_id}.json", meta_path.read_bytes())
        b.images[bin_id] = jpeg
        quantity = json.loads(meta_path.read_bytes())["EXPECTED_QUANTITY"]
        if 1 <= quantity <= 5:
            b.real[bin_id] = quantity
        elif quantity > 5:  # the 48-item bin, listed as a 5: a real label mismatch
            b.faults[bin_id] = 5
            b.expected_bad[bin_id] = "label_mismatch"
    fill.close()
    return b


def build_list_bucket(url, name="abid-whole", n_per_count=3, counts=(0, 1, 2, 3, 4, 5, 6, 7, 8), seed=5):
    """A bucket as all of ABID looks to `binsight list`: generated bins of counts beyond 1-5, the real
    sample bins (the empty bin and the 48-item bin among them), and bins without a usable quantity.
    -> (Bucket, {id: count} every list must hold, {id: skip reason} its report must name)."""
    client = admin_client(url)
    client.create_bucket(Bucket=name)
    fill = Filler(url, name)
    b = Bucket(url=url, name=name)
    expected = {}
    for bin_id, (count, jpeg, meta) in make_bins(n_per_count, seed=seed, first_id=300000, classes=counts).items():
        fill(f"bin-images/{bin_id}.jpg", jpeg)
        fill(f"metadata/{bin_id}.json", meta)
        expected[bin_id] = count
    for meta_path in sorted((REAL_SAMPLE / "metadata").glob("*.json")):
        fill(
            f"bin-images/{meta_path.stem}.jpg",
            (REAL_SAMPLE / "bin-images" / f"{meta_path.stem}.jpg").read_bytes(),
        )
        fill(f"metadata/{meta_path.stem}.json", meta_path.read_bytes())
        expected[meta_path.stem] = json.loads(meta_path.read_bytes())["EXPECTED_QUANTITY"]
    jpeg = next(iter(make_bins(1, seed=seed + 1, classes=(2,)).values()))[1]
    planted = {
        "390001": (json.dumps({"BIN_FCSKU_DATA": {}}).encode(), "missing_quantity"),
        "390002": (json.dumps({"BIN_FCSKU_DATA": {}, "EXPECTED_QUANTITY": None}).encode(), "null_quantity"),
        "390003": (json.dumps({"EXPECTED_QUANTITY": "three"}).encode(), "bad_quantity"),
        "390004": (b'{"EXPECTED_QUANTITY": 2', "unreadable_metadata"),
        "390005": (json.dumps({"EXPECTED_QUANTITY": 2}).encode(), "missing_image"),
    }
    for bin_id, (meta, _) in planted.items():
        fill(f"metadata/{bin_id}.json", meta)
        if bin_id != "390005":
            fill(f"bin-images/{bin_id}.jpg", jpeg)
    fill.close()
    return b, expected, {bin_id: reason for bin_id, (_, reason) in planted.items()}
