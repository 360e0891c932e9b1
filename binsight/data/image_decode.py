"""Decode checks and fast loading of bin photos."""

import io

from PIL import Image, UnidentifiedImageError

from binsight.errors import DataError


def verify_jpeg(data):
    """Fully decode JPEG bytes; return (width, height) or raise DataError saying why not."""
    if not data:
        raise DataError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG":
                raise DataError(f"not a JPEG but {img.format}")
            img.load()  # a truncated file fails here, not at open()
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"JPEG does not decode: {exc}") from None


def load_rgb(src, size=None, formats=None, max_pixels=None):
    """Open a path or file object as a fully decoded RGB image. With `size`, let libjpeg decode at a
    reduced scale first (draft mode): a 2x-4x cheaper decode when the photo is at least twice the
    training resolution. `max_pixels` refuses an image larger than that (after draft scaling)
    before it is decoded. Training, evaluate, predict and serve all decode through here."""
    img = Image.open(src, formats=formats)
    if size is not None and img.format == "JPEG":
        img.draft("RGB", (size, size))
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise DataError(f"image is {width}x{height} pixels, more than the {max_pixels} allowed")
    img.load()  # a truncated file fails here, not at open()
    return img.convert("RGB")
