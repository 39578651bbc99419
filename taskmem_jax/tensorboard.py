"""TensorBoard event files without TensorFlow: scalar summaries written as TFRecords of Event protos.

An event file is a sequence of records: uint64 length, uint32 masked CRC-32C of the length, the
serialized tensorflow.Event, uint32 masked CRC-32C of it (little-endian). We encode the few proto fields
scalars need by hand (Event: wall_time=1 double, step=2 int64, file_version=3 string, summary=5;
Summary: value=1 repeated; Summary.Value: tag=1 string, simple_value=2 float), so TensorBoard reads the
files while the project does not depend on tensorflow or tensorboard.
"""

from __future__ import annotations

import os
import socket
import struct
import time

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected
_TABLE = []
for _i in range(256):
  _c = _i
  for _ in range(8):
    _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
  _TABLE.append(_c)


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  n &= (1 << 64) - 1
  while True:
    byte = n & 0x7F
    n >>= 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _key(field: int, wire: int) -> bytes:
  return _varint(field << 3 | wire)


def _length_delimited(field: int, payload: bytes) -> bytes:
  return _key(field, 2) + _varint(len(payload)) + payload


def encode_event(*, wall_time: float, step: int = 0, file_version: str | None = None,
                 scalars: dict[str, float] | None = None) -> bytes:
  """A serialized tensorflow.Event with the given fields."""
  out = _key(1, 1) + struct.pack("<d", wall_time)
  if step:
    out += _key(2, 0) + _varint(int(step))
  if file_version is not None:
    out += _length_delimited(3, file_version.encode())
  if scalars:
    values = b"".join(_length_delimited(1, _length_delimited(1, tag.encode()) + _key(2, 5) +
                                        struct.pack("<f", float(value))) for tag, value in scalars.items())
    out += _length_delimited(5, values)
  return out


def record(data: bytes) -> bytes:
  """One TFRecord framing `data`."""
  length = struct.pack("<Q", len(data))
  return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


class SummaryWriter:
  """Appends scalar events to logdir/events.out.tfevents.<time>.<host> (a new file per writer, as
  TensorBoard expects; it merges the files of one logdir, so a resumed run keeps its history)."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    self.path = os.path.join(logdir, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}")
    self._file = open(self.path, "ab")
    self._file.write(record(encode_event(wall_time=time.time(), file_version="brain.Event:2")))
    self._file.flush()

  def scalars(self, step: int, values: dict[str, float]) -> None:
    self._file.write(record(encode_event(wall_time=time.time(), step=step, scalars=values)))
    self._file.flush()

  def close(self) -> None:
    self._file.close()
