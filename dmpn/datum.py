"""Caffe ``Datum`` messages, encoded and decoded without pycaffe.

Caffe's ``caffe.proto`` defines::

    message Datum {
      optional int32 channels = 1;
      optional int32 height = 2;
      optional int32 width = 3;
      optional bytes data = 4;          // uint8, C x H x W order
      optional int32 label = 5;
      repeated float float_data = 6;
      optional bool encoded = 7 [default = false];
    }

This module writes the protobuf wire format by hand (varint tags and lengths), producing the same
bytes as ``caffe_pb2.Datum(channels=C, height=H, width=W, data=..., label=L).SerializeToString()``
(fields 1 to 5 in field order, which is how protobuf serialises a message with those fields set).
The decoder reads any valid Datum (including ``float_data`` packed or unpacked and ``encoded``),
so databases written by Caffe's own tools decode too.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["encode_datum", "decode_datum", "decode_datum_fields", "DatumError", "ITEM_CHANNEL_NAMES",
           "ITEM_CHANNELS", "CHANNEL_ORDER", "ITEM_SLICE_POINTS"]

# One LMDB item of tools/make_lmdb.py: a uint8 Datum, C x H x W, with these channels in this
# order (dmpn.compose.pack_item packs them). The one definition: the channel count that
# dmpn.caffe_checks.check_lmdb expects, the manifest's channel_order and the nets' Slice points
# (dmpn.net) are derived from it.
ITEM_CHANNEL_NAMES = ("image_r", "image_g", "image_b", "trimap", "alpha", "fg_r", "fg_g", "fg_b",
                      "bg_r", "bg_g", "bg_b")
ITEM_CHANNELS = len(ITEM_CHANNEL_NAMES)
CHANNEL_ORDER = {}  # {"image": [0, 1, 2], "trimap": [3], ...}
for _index, _name in enumerate(ITEM_CHANNEL_NAMES):
    CHANNEL_ORDER.setdefault(_name.split("_")[0], []).append(_index)
# Where a Slice layer cuts an item into its parts: (3, 4, 5, 8).
ITEM_SLICE_POINTS = tuple(indices[0] for indices in list(CHANNEL_ORDER.values())[1:])


class DatumError(ValueError):
    """Raised for bytes that are not a well-formed raw (uint8) Datum."""


_WT_VARINT, _WT_I64, _WT_LEN, _WT_I32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    if value < 0:  # int32 negatives are written as 10-byte two's complement varints
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def encode_datum(array: np.ndarray, label: int = 0) -> bytes:
    """Serialise a uint8 array of shape (C, H, W) as a Caffe Datum (``data`` field, not encoded).

    ``label`` is always written (as Caffe's ``convert_imageset`` does).
    """
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise DatumError(f"Datum data must be uint8, got {a.dtype}")
    if a.ndim != 3:
        raise DatumError(f"Datum data must be C x H x W, got shape {a.shape}")
    c, h, w = (int(s) for s in a.shape)
    payload = np.ascontiguousarray(a).tobytes()
    return b"".join(
        [
            _tag(1, _WT_VARINT), _varint(c),
            _tag(2, _WT_VARINT), _varint(h),
            _tag(3, _WT_VARINT), _varint(w),
            _tag(4, _WT_LEN), _varint(len(payload)), payload,
            _tag(5, _WT_VARINT), _varint(int(label)),
        ]
    )


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise DatumError("truncated varint in Datum")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DatumError("varint too long in Datum")


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def decode_datum_fields(blob: bytes) -> dict:
    """Parse a serialised Datum into a dict of its fields (unknown fields are skipped)."""
    buf = memoryview(blob)
    pos = 0
    fields: dict = {"channels": 0, "height": 0, "width": 0, "data": b"", "label": 0,
                    "float_data": [], "encoded": False}
    names = {1: "channels", 2: "height", 3: "width", 5: "label"}
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wt = key >> 3, key & 7
        if wt == _WT_VARINT:
            value, pos = _read_varint(buf, pos)
            if field in names:
                fields[names[field]] = _int32(value)
            elif field == 7:
                fields["encoded"] = bool(value)
        elif wt == _WT_LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise DatumError("truncated length-delimited field in Datum")
            chunk = bytes(buf[pos:pos + length])
            pos += length
            if field == 4:
                fields["data"] = chunk
            elif field == 6:  # packed floats
                fields["float_data"].extend(struct.unpack(f"<{length // 4}f", chunk))
        elif wt == _WT_I32:
            if pos + 4 > len(buf):
                raise DatumError("truncated fixed32 in Datum")
            if field == 6:
                fields["float_data"].append(struct.unpack("<f", bytes(buf[pos:pos + 4]))[0])
            pos += 4
        elif wt == _WT_I64:
            pos += 8
        else:
            raise DatumError(f"unsupported wire type {wt} in Datum")
    if pos != len(buf):
        raise DatumError("truncated Datum")
    return fields


def decode_datum(blob: bytes) -> tuple[np.ndarray, int]:
    """Return ``(array uint8 C x H x W, label)`` from a serialised raw (not encoded) Datum."""
    f = decode_datum_fields(blob)
    if f["encoded"]:
        raise DatumError("encoded (compressed) Datum: not produced by this project")
    c, h, w = f["channels"], f["height"], f["width"]
    if len(f["data"]) != c * h * w:
        raise DatumError(f"Datum data holds {len(f['data'])} bytes, expected {c}x{h}x{w}")
    arr = np.frombuffer(f["data"], dtype=np.uint8).reshape(c, h, w)
    return arr, f["label"]
