"""decode_xray / prepare_xray: formats, DICOM photometry, geometry and bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from encoders.errors import InvalidInputError
from encoders.preprocess.xray import XRAY_MEAN, XRAY_STD, decode_xray, prepare_xray


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **elements) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_png_8bit_scaled_by_bit_depth_not_stretched():
    dark = np.full((40, 30), 50, dtype=np.uint8)
    dark[10:20, 10:20] = 100
    image = decode_xray(_png(dark))
    assert image.dtype == np.float32 and image.shape == (40, 30)
    # No per-image stretching: an under-exposed film stays dark.
    assert image.max() == pytest.approx(100 / 255) and image.min() == pytest.approx(50 / 255)


def test_rgb_rgba_and_16bit_png(tmp_path):
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    np.testing.assert_allclose(decode_xray(_png(rgba)), grey / 255.0, atol=2 / 255)
    np.testing.assert_allclose(decode_xray(_png(rgba[..., :3])), grey / 255.0, atol=2 / 255)
    twelve_bit = (np.tile(np.linspace(0, 4095, 64), (64, 1))).astype(np.uint16)
    path = tmp_path / "x16.png"
    Image.fromarray(twelve_bit).save(path)
    image = decode_xray(str(path))
    # 12-bit data stored in 16 bits is scaled by 4095, not 65535 (else it would be almost black).
    assert image.max() == pytest.approx(1.0) and image.min() == pytest.approx(0.0)


def test_jpeg_decodes():
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32), 128, dtype=np.uint8)).save(buffer, format="JPEG")
    assert decode_xray(buffer.getvalue()).mean() == pytest.approx(128 / 255, abs=0.02)


def test_dicom_rescale_window_and_monochrome1():
    pixels = np.zeros((16, 16), dtype=np.uint16)
    pixels[:, 8:] = 1000  # stored values; rescale -> HU-like 2*v - 1000: left -1000, right 1000
    window = dict(RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=0, WindowWidth=1000)
    mono2 = decode_xray(_dicom(pixels, **window))
    assert mono2[:, :8].max() == pytest.approx(0.0, abs=1e-3)   # below the window: black
    assert mono2[:, 8:].min() == pytest.approx(1.0, abs=1e-3)   # above the window: white
    mono1 = decode_xray(_dicom(pixels, photometric="MONOCHROME1", **window))
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-3)


def test_dicom_without_window_uses_min_max_and_16_bit():
    pixels = np.tile(np.linspace(100, 40000, 16), (16, 1))
    image = decode_xray(_dicom(pixels, bits=16))
    assert image.min() == pytest.approx(0.0) and image.max() == pytest.approx(1.0)


def test_prepare_keeps_aspect_pads_and_normalises_with_fixed_constants():
    wide = np.ones((50, 100), dtype=np.float32)
    out = prepare_xray(wide, 64)
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    pad = (0.0 - XRAY_MEAN) / XRAY_STD
    white = (1.0 - XRAY_MEAN) / XRAY_STD
    assert np.allclose(out[0, :10], pad) and np.allclose(out[0, -10:], pad)   # letterbox rows
    assert np.allclose(out[0, 20:44], white)                                 # image rows untouched
    # The same image in uint8 and uint16 gives the same input.
    u8 = (np.random.default_rng(0).random((30, 40)) * 255).astype(np.uint8)
    u16 = u8.astype(np.uint16) * 257
    np.testing.assert_allclose(prepare_xray(u8, 32), prepare_xray(u16, 32), atol=1e-4)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, b"DICM" * 10],
)
def test_undecodable_bytes_raise_invalid_input(data):
    with pytest.raises(InvalidInputError) as info:
        decode_xray(data)
    assert info.value.field == "xray"


def test_bad_arrays_raise_invalid_input(tmp_path):
    with pytest.raises(InvalidInputError):
        prepare_xray(np.zeros((4, 4)), 32)              # too small to be a radiograph
    with pytest.raises(InvalidInputError):
        prepare_xray(np.full((32, 32), 3.5), 32)        # float outside [0, 1]
    with pytest.raises(InvalidInputError):
        prepare_xray(np.zeros((2, 32, 32)), 32)         # not an image layout
    with pytest.raises(InvalidInputError):
        decode_xray(tmp_path / "missing.png")


def test_real_nih_thumbnails(shared_data):
    paths = sorted((shared_data / "nih_chestxray14").glob("*/*/*.png"))[:20]
    assert paths, "NIH thumbnails missing"
    for path in paths:
        image = decode_xray(path)
        assert image.shape == (64, 64) and 0.0 <= image.min() and image.max() <= 1.0
        assert image.std() > 0.02  # a real radiograph, not a blank
        assert prepare_xray(image, 96).shape == (1, 96, 96)
