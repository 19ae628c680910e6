"""Masks: npz with key 'mask', never unpickled."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from spora_sd.errors import CohortFormatError, InvalidArgumentError
from spora_sd.io.masks import parse_npy_header, read_mask, read_mask_shape, write_mask


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int32", "int64", "bool"])
def test_round_trip(tmp_path: Path, dtype: str) -> None:
    mask = (np.arange(35).reshape(5, 7) % 3).astype(dtype)
    path = write_mask(tmp_path / "m.npz", mask)
    back = read_mask(path)
    assert back.dtype == mask.dtype
    np.testing.assert_array_equal(back, mask)
    assert read_mask_shape(path) == ((5, 7), np.dtype(dtype))
    assert sorted(np.load(path).files) == ["mask"]


def test_pickled_mask_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, mask=np.array([[object()]], dtype=object))
    with pytest.raises(CohortFormatError, match=r"mask.pickled") as exc:
        read_mask(path)
    assert str(path) in str(exc.value)
    with pytest.raises(CohortFormatError, match=r"mask.pickled"):
        read_mask_shape(path)


def test_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    np.savez_compressed(path, labels=np.zeros((2, 2)))
    with pytest.raises(CohortFormatError, match=r"mask.key"):
        read_mask(path)
    with pytest.raises(CohortFormatError, match=r"mask.key"):
        read_mask_shape(path)


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04garbage"])
def test_unreadable(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    with pytest.raises(CohortFormatError, match=r"mask.unreadable"):
        read_mask(path)


def test_truncated(tmp_path: Path) -> None:
    path = write_mask(tmp_path / "m.npz", np.random.default_rng(0).integers(0, 9, (200, 200)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CohortFormatError, match=r"mask.unreadable"):
        read_mask(path)


def test_writer_refuses_bad_masks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D"):
        write_mask(tmp_path / "m.npz", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="pickle"):
        write_mask(tmp_path / "m.npz", np.array([[None]], dtype=object))
    assert not (tmp_path / "m.npz").exists()


def _npz_with_member(path: Path, member: bytes) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mask.npy", member)
    return path


def test_a_short_member_is_unreadable_not_pickled(tmp_path: Path) -> None:
    """The header promises more pixels than the member holds: a truncated file, said so."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.arange(10_000, dtype="uint32").reshape(100, 100))
    path = _npz_with_member(tmp_path / "m.npz", buffer.getvalue()[:20_000])
    for read in (read_mask, read_mask_shape):
        with pytest.raises(CohortFormatError, match="header declares") as exc:
            read(path)
        assert exc.value.rule == "mask.unreadable"


def test_a_huge_header_is_refused_before_allocating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<u4", "fortran_order": False, "shape": (200_000, 200_000)})
    path = _npz_with_member(tmp_path / "m.npz", header.getvalue() + b"\0" * 64)
    for read in (read_mask, read_mask_shape):
        with pytest.raises(CohortFormatError, match="SPORA_SD_MAX_MASK_PIXELS") as exc:
            read(path)
        assert exc.value.rule == "mask.too_large"
    # the limit is the user's: lower it, and an ordinary mask is refused too
    small = write_mask(tmp_path / "s.npz", np.zeros((100, 100), "uint8"))
    with pytest.raises(CohortFormatError, match=r"mask\.too_large"):
        read_mask(small, max_pixels=9_999)
    monkeypatch.setenv("SPORA_SD_MAX_MASK_PIXELS", "9_999")
    with pytest.raises(CohortFormatError, match=r"mask\.too_large"):
        read_mask_shape(small)
    monkeypatch.setenv("SPORA_SD_MAX_MASK_PIXELS", "lots")
    with pytest.raises(InvalidArgumentError, match="SPORA_SD_MAX_MASK_PIXELS"):
        read_mask_shape(small)


@pytest.mark.parametrize(
    ("array", "version"),
    [
        (np.arange(12, dtype="<u4").reshape(3, 4), (1, 0)),
        (np.arange(12, dtype=">i2").reshape(3, 4), (1, 0)),
        (np.asfortranarray(np.arange(12, dtype="<f8").reshape(3, 4)), (1, 0)),
        (np.zeros((0, 5), dtype="u1"), (1, 0)),
        (np.zeros((), dtype="<u2"), (1, 0)),
        (np.zeros((7,), dtype="bool"), (2, 0)),
        (np.zeros((2, 2), dtype=[("a", "<u4"), ("b", "<f4")]), (1, 0)),  # numpy's parser
    ],
)
def test_parse_npy_header_agrees_with_numpy(array: np.ndarray, version: tuple[int, int]) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version)
    raw = buffer.getvalue()
    buffer.seek(0)
    np.lib.format.read_magic(buffer)
    reader = np.lib.format.read_array_header_1_0 if version[0] == 1 else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = reader(buffer)
    assert parse_npy_header(raw[: buffer.tell()]) == (tuple(shape), fortran_order, dtype)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["<u4", ">u4", "<i8"])
def test_read_mask_keeps_order_and_byte_order(tmp_path: Path, order: str, dtype: str) -> None:
    mask = np.asarray(np.arange(35).reshape(5, 7), dtype=dtype, order=order)  # type: ignore[call-overload]
    path = tmp_path / "m.npz"
    np.savez(path, mask=mask)  # stored, not deflated
    back = read_mask(path)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, mask)
    back[0, 0] = 1  # writable, as np.load's arrays are


def test_a_header_that_is_code_is_refused_not_run(tmp_path: Path) -> None:
    text = b"{'descr': __import__('os').getcwd(), 'fortran_order': False, 'shape': (2, 2), }"
    text += b" " * (118 - len(text)) + b"\n"
    member = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + b"\0" * 16
    path = _npz_with_member(tmp_path / "m.npz", member)
    for read in (read_mask, read_mask_shape):
        with pytest.raises(CohortFormatError, match=r"mask\.unreadable"):
            read(path)


def test_a_corrupt_member_fails_its_crc(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    np.savez(path, mask=np.arange(10_000, dtype="uint32").reshape(100, 100))  # stored: bytes can be flipped in place
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CohortFormatError, match=r"mask\.unreadable"):
        read_mask(path)
