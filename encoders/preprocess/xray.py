"""Chest X-ray decoding and preparation to the model's input contract.

One path for training, ingest and the gRPC request path:

    decode_xray(bytes | path)  -> float32 [H, W] in [0, 1]   (display intensities, 1 = white = dense)
    prepare_xray(image, size)  -> float32 [1, size, size]    (aspect kept, zero-padded, fixed normalisation)

Intensity policy. PNG/JPEG files are already display images (the modality's window was applied when
they were exported), so they are only scaled by their bit depth: an under-exposed film stays darker
than a well-exposed one, as a radiologist would see it. DICOM files carry raw detector values; they go
through the modality LUT (rescale slope/intercept), then the VOI LUT or window the file itself
specifies, and the result is scaled by the window's output range. Only a DICOM with no window at all
falls back to per-image min/max, because its raw values have no display meaning without one.
MONOCHROME1 (white = low value) is inverted so that bone and heart are always bright.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from encoders.errors import InvalidInputError

# Fixed normalisation applied after resizing: x_model = (x - XRAY_MEAN) / XRAY_STD with x in [0, 1].
# 0.5 / 0.25 maps the display range to [-2, 2]; fixed constants (not per-image statistics) keep
# exposure and density differences visible to the model. Padding is black (x = 0 -> -2), which is
# what air and collimated borders look like on a radiograph.
XRAY_MEAN: float = 0.5
XRAY_STD: float = 0.25
PAD_VALUE: float = 0.0

# Luminance weights (ITU-R BT.601), the same PIL uses for RGB -> L.
_RGB_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# A decoded image smaller than this is not a radiograph (or is a corrupt file).
MIN_SIDE = 8
# Refuse absurd images before allocating them (a 50k x 50k float32 array is 10 GB).
MAX_PIXELS = 100_000_000


def decode_xray(data: bytes | str | Path) -> np.ndarray:
    """Decode a PNG, JPEG or DICOM X-ray into grey float32 [H, W] in [0, 1]."""
    raw = _read_bytes(data)
    if _looks_like_dicom(raw):
        image = _decode_dicom(raw)
    else:
        image = _decode_raster(raw)
    _check_image(image)
    return image


def prepare_xray(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an X-ray to [1, size, size]: longest side to `size`, zero-padded, fixed normalisation.

    `image` is [H, W] (or [H, W, 1|3|4]) of any numeric dtype. Integer images are scaled by their
    dtype's range (uint8 / 255, uint16 / 65535); float images must already be in [0, 1] (what
    `decode_xray` returns).
    """
    if not isinstance(size, (int, np.integer)) or size < MIN_SIDE:
        raise InvalidInputError("xray.size", f"target size must be an integer >= {MIN_SIDE}, got {size!r}")
    grey = to_unit_grey(image)
    height, width = grey.shape
    scale = size / max(height, width)
    new_h = max(1, round(height * scale))
    new_w = max(1, round(width * scale))
    # PIL's float-mode resize is antialiased when shrinking (its filter support grows with the scale).
    resized = np.asarray(Image.fromarray(grey, mode="F").resize((new_w, new_h), Image.BILINEAR), dtype=np.float32)
    canvas = np.full((size, size), PAD_VALUE, dtype=np.float32)
    top = (size - new_h) // 2
    left = (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = np.clip(resized, 0.0, 1.0)
    return ((canvas - XRAY_MEAN) / XRAY_STD)[None, :, :]


def to_unit_grey(image: np.ndarray) -> np.ndarray:
    """Any [H, W] / [H, W, C] numeric array -> float32 [H, W] in [0, 1] (see prepare_xray)."""
    array = np.asarray(image)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InvalidInputError("xray", f"expected a numeric image array, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[:, :, 0] if array.shape[2] == 1 else _rgb_to_grey(array[:, :, :3])
    if array.ndim != 2:
        raise InvalidInputError(
            "xray", f"expected a grey [H, W] or colour [H, W, 3] image, got shape {tuple(np.shape(image))}"
        )
    if array.dtype == bool:
        grey = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        if info.min < 0:
            # Signed integers have no display convention; treat the image's own range as the window.
            grey = _min_max(array.astype(np.float32))
        else:
            grey = array.astype(np.float32) / float(info.max)
    else:
        grey = array.astype(np.float32)
        if not np.all(np.isfinite(grey)):
            raise InvalidInputError("xray", "image contains NaN or Inf values; pass finite intensities in [0, 1]")
        low, high = float(grey.min()), float(grey.max())
        if low < -1e-3 or high > 1.0 + 1e-3:
            raise InvalidInputError(
                "xray",
                f"float images must be in [0, 1] (got [{low:.3g}, {high:.3g}]); pass the integer image "
                "or scale it to [0, 1] with its display window",
            )
        grey = np.clip(grey, 0.0, 1.0)
    _check_image(grey)
    return np.ascontiguousarray(grey, dtype=np.float32)


def _read_bytes(data: bytes | str | Path) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    elif isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise InvalidInputError("xray", f"file not found: {path}; pass an existing PNG, JPEG or DICOM file")
        raw = path.read_bytes()
    else:
        raise InvalidInputError("xray", f"expected bytes or a file path, got {type(data).__name__}")
    if not raw:
        raise InvalidInputError("xray", "image data is empty; send the PNG, JPEG or DICOM file's bytes")
    return raw


def _looks_like_dicom(raw: bytes) -> bool:
    # Part 10 files have a 128-byte preamble then "DICM"; raw datasets without it start with a
    # group 0x0008 (or 0x0002) tag in little-endian.
    if len(raw) >= 132 and raw[128:132] == b"DICM":
        return True
    return raw[:2] in (b"\x08\x00", b"\x02\x00") and len(raw) > 8


def _decode_raster(raw: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(raw)) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise InvalidInputError(
                    "xray", f"image is {opened.width}x{opened.height}; downsample it below {MAX_PIXELS} pixels"
                )
            opened.load()
            image = opened
            mode = image.mode
            if mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                mode = image.mode
            if mode == "CMYK" or mode == "YCbCr" or mode == "LAB" or mode == "HSV":
                image = image.convert("RGB")
                mode = "RGB"
            array = np.asarray(image)
    except InvalidInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidInputError(
            "xray", f"cannot decode the image ({exc.__class__.__name__}: {exc}); send a PNG, JPEG or DICOM file"
        ) from None
    if mode in ("LA", "RGBA"):
        array = array[..., :-1]  # alpha carries no density; radiographs are opaque
        if mode == "LA":
            array = array[..., 0]
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit PNGs: detector images are often 12-bit values stored in 16 bits; scale by the
        # smallest bit depth (8, 10, 12, 14, 16) that holds the data so they are not nearly black.
        values = array.astype(np.float32)
        peak = float(values.max()) if values.size else 0.0
        if float(values.min(initial=0.0)) < 0:
            return _min_max(values)
        bits = next((b for b in (8, 10, 12, 14, 16) if peak <= 2**b - 1), None)
        if bits is None:
            return _min_max(values)
        return values / float(2**bits - 1)
    if mode == "F":
        values = array.astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise InvalidInputError("xray", "floating-point image contains NaN or Inf")
        return _min_max(values)
    if mode == "1":
        return array.astype(np.float32)
    return to_unit_grey(array)


def _decode_dicom(raw: bytes) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(raw), force=True)
        pixels = dataset.pixel_array
    except Exception as exc:  # pydicom raises many types for bad or unsupported files
        raise InvalidInputError(
            "xray",
            f"cannot decode the DICOM pixel data ({exc.__class__.__name__}: {exc}); send an uncompressed "
            "or baseline-JPEG DICOM, or export the image as PNG",
        ) from None
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR"):
        if frames > 1:
            pixels = pixels[0]
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels = apply_color_lut(pixels, dataset)
        elif photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        return _min_max(_rgb_to_grey(np.asarray(pixels, dtype=np.float32)))
    if frames > 1:
        pixels = pixels[0]  # a multi-frame radiograph: the first frame is the acquisition
    values = apply_modality_lut(pixels, dataset)
    has_window = "WindowCenter" in dataset and "WindowWidth" in dataset
    has_voi_lut = "VOILUTSequence" in dataset
    if has_window or has_voi_lut:
        values = apply_voi_lut(values, dataset, index=0).astype(np.float32)
        low, high = _voi_output_range(dataset, has_voi_lut)
        image = np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0)
    else:
        image = _min_max(np.asarray(values, dtype=np.float32))
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    return image.astype(np.float32)


def _voi_output_range(dataset, has_voi_lut: bool) -> tuple[float, float]:
    """The value range pydicom's VOI transform maps into, so the window (not the image) sets [0, 1]."""
    if has_voi_lut:
        item = dataset.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(getattr(dataset, "BitsStored", 16) or 16)
    if int(getattr(dataset, "PixelRepresentation", 0) or 0) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    if np.issubdtype(rgb.dtype, np.integer):
        scale = float(np.iinfo(rgb.dtype).max)
        grey = rgb.astype(np.float32) @ _RGB_WEIGHTS
        return (grey / scale).astype(np.float32) if scale > 0 else grey
    return (rgb.astype(np.float32) @ _RGB_WEIGHTS).astype(np.float32)


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-12:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 2:
        raise InvalidInputError("xray", f"decoded image has shape {image.shape}; expected a single 2-D frame")
    if min(image.shape) < MIN_SIDE:
        raise InvalidInputError(
            "xray", f"image is {image.shape[1]}x{image.shape[0]} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed"
        )
    if image.size > MAX_PIXELS:
        raise InvalidInputError("xray", f"image has {image.size} pixels; downsample it below {MAX_PIXELS}")
