"""TensorBoard event files without TensorFlow: scalar summaries written as TFRecords of Event protos.

An event file is a sequence of records: uint64 length, uint32 masked CRC-32C of the length, the
serialized tensorflow.Event, uint32 masked CRC-32C of it (little-endian). We encode the few proto fields
scalars need by hand (Event: wall_time=1 double, step=2 int64, file_version=3 string, summary=5;
Summary: value=1 repeated; Summary.Value: tag=1 string, simple_value=2 float), so TensorBoard reads the
files while the project does not depend on tensorflow or tensorboard. read_scalars decodes them back
(tests, and a quick look without TensorBoard).
"""

from __future__ import annotations

import glob
import itertools
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


_WRITERS = itertools.count()  # tells apart the files of writers opened in one process within one second


class SummaryWriter:
  """Appends scalar events to logdir/events.out.tfevents.<time>.<host>.<pid>.<n> (a new file per writer,
  as TensorBoard expects; it merges the files of one logdir, so a resumed run keeps its history)."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_WRITERS)}"
    self.path = os.path.join(logdir, name)
    self._file = open(self.path, "ab")
    self._file.write(record(encode_event(wall_time=time.time(), file_version="brain.Event:2")))
    self._file.flush()

  def scalars(self, step: int, values: dict[str, float]) -> None:
    self._file.write(record(encode_event(wall_time=time.time(), step=step, scalars=values)))
    self._file.flush()

  def close(self) -> None:
    self._file.close()


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
  n = shift = 0
  while True:
    byte = data[i]
    n |= (byte & 0x7F) << shift
    i, shift = i + 1, shift + 7
    if not byte & 0x80:
      return n, i


def _fields(data: bytes):
  """(field, wire type, value) of a serialized proto: ints for varints, bytes for the rest."""
  i = 0
  while i < len(data):
    key, i = _read_varint(data, i)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, i = _read_varint(data, i)
    elif wire == 1:
      value, i = data[i:i + 8], i + 8
    elif wire == 5:
      value, i = data[i:i + 4], i + 4
    elif wire == 2:
      n, i = _read_varint(data, i)
      value, i = data[i:i + n], i + n
    else:
      raise ValueError(f"unsupported wire type {wire}")
    yield field, wire, value


def read_events(path: str) -> list[tuple[int, dict[str, float]]]:
  """(step, {tag: value}) of each scalar event in one event file, in file order; checks the CRCs."""
  with open(path, "rb") as f:
    data = f.read()
  out, offset = [], 0
  while offset + 12 <= len(data):
    (n,) = struct.unpack_from("<Q", data, offset)
    if struct.unpack_from("<I", data, offset + 8)[0] != masked_crc32c(data[offset:offset + 8]):
      raise ValueError(f"{path}: bad length CRC at byte {offset}")
    payload = data[offset + 12:offset + 12 + n]
    if len(payload) < n or offset + 16 + n > len(data):
      break  # a record still being written
    if struct.unpack_from("<I", data, offset + 12 + n)[0] != masked_crc32c(payload):
      raise ValueError(f"{path}: bad data CRC at byte {offset}")
    offset += 16 + n
    step, scalars = 0, {}
    for field, _, value in _fields(payload):
      if field == 2:
        step = value
      elif field == 5:
        for _, _, v in _fields(value):
          parts = {f: x for f, _, x in _fields(v)}
          if 1 in parts and 2 in parts:
            scalars[parts[1].decode()] = struct.unpack("<f", parts[2])[0]
    if scalars:
      out.append((step, scalars))
  return out


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """tag -> [(step, value)] over every event file of logdir (oldest file first, as TensorBoard merges)."""
  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")), key=os.path.getmtime):
    for step, scalars in read_events(path):
      for tag, value in scalars.items():
        out.setdefault(tag, []).append((step, value))
  return out
