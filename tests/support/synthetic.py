"""Synthetic bin photos with a known number of objects, and metadata in ABID's own format."""

import io
import json
import random

from PIL import Image, ImageDraw

COLOURS = [
    (230, 60, 50),
    (60, 200, 80),
    (70, 110, 240),
    (240, 220, 60),
    (220, 90, 220),
    (60, 220, 220),
    (250, 150, 40),
    (245, 245, 245),
]


def draw_bin(count, size, rng):
    """A dark bin with `count` bright, non-overlapping blobs (ellipses and boxes)."""
    w, h = size
    img = Image.new("RGB", size, (rng.randint(25, 55), rng.randint(25, 45), rng.randint(20, 40)))
    draw = ImageDraw.Draw(img)
    draw.rectangle([2, 2, w - 3, h - 3], outline=(90, 80, 60), width=2)  # the bin's rim
    cells = [(cx, cy) for cx in range(3) for cy in range(3)]
    rng.shuffle(cells)
    cw, ch = w / 3, h / 3
    for cx, cy in cells[:count]:
        rx, ry = cw * rng.uniform(0.25, 0.38), ch * rng.uniform(0.25, 0.38)
        x = cw * (cx + 0.5) + rng.uniform(-0.08, 0.08) * cw
        y = ch * (cy + 0.5) + rng.uniform(-0.08, 0.08) * ch
        box = [x - rx, y - ry, x + rx, y + ry]
        colour = rng.choice(COLOURS)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return img


def jpeg_bytes(img, quality=90):
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def metadata_bytes(count, rng):
    """ABID metadata for `count` items, split over one or two products, some measurements null."""
    quantities = [count] if count == 1 or rng.random() < 0.5 else [count - 1, 1]
    skus = {}
    for i, qty in enumerate(quantities):
        asin = f"B0{rng.randint(0, 10**8):08d}{i}"
        skus[asin] = {
            "asin": asin,
            "name": f"synthetic product {i}",
            "normalizedName": f"synthetic product {i}",
            "quantity": qty,
            "height": {"unit": "IN", "value": round(rng.uniform(0.5, 6), 3)},
            "length": {"unit": "IN", "value": round(rng.uniform(2, 12), 3)},
            "width": {"unit": "IN", "value": round(rng.uniform(1, 8), 3)},
            "weight": None if rng.random() < 0.2 else {"unit": "pounds", "value": round(rng.uniform(0.1, 4), 3)},
        }
    return json.dumps({"BIN_FCSKU_DATA": skus, "EXPECTED_QUANTITY": count}, indent=4).encode()


def make_bins(n_per_class, seed=0, first_id=100000, classes=(1, 2, 3, 4, 5)):
    """{bin_id: (label, jpeg bytes, metadata bytes)}, image sizes varying like the real photos."""
    rng = random.Random(seed)
    bins, next_id = {}, first_id
    for label in classes:
        for _ in range(n_per_class):
            size = (rng.randint(72, 104), rng.randint(72, 104))
            bins[f"{next_id:06d}"] = (label, jpeg_bytes(draw_bin(label, size, rng)), metadata_bytes(label, rng))
            next_id += 1
    return bins


def file_list(labels):
    """{bin_id: label} -> file_list.json's object."""
    out = {}
    for bin_id, label in sorted(labels.items()):
        out.setdefault(str(label), []).append(f"data/metadata/{bin_id}.json")
    return dict(sorted(out.items()))
