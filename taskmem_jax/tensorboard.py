"""TensorBoard scalars: written with tensorboardX (TensorBoard's file format without TensorFlow), read back
with its Event proto.

An event file is a sequence of TFRecords: uint64 length, uint32 masked CRC-32C of the length, a
serialized Event, uint32 masked CRC-32C of it (little-endian). `SummaryWriter.scalars(step, {tag: value})`
writes one event per tag; `read_scalars(logdir)` reads every event file of a directory back (tests, and a
quick look without TensorBoard), checking the CRCs.
"""

from __future__ import annotations

import glob
import itertools
import os
import struct

import tensorboardX
from tensorboardX.crc32c import crc32c
from tensorboardX.proto import event_pb2

_WRITERS = itertools.count()


def masked_crc32c(data: bytes) -> int:
  """The TFRecord CRC: CRC-32C rotated right by 15 bits plus a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class SummaryWriter:
  """Scalar events in logdir/events.out.tfevents.<time>.<host>.<pid>.<n>: a new file per writer (TensorBoard
  merges the files of one logdir, so a resumed run keeps its history). Every call is flushed."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    self._writer = tensorboardX.SummaryWriter(logdir=logdir, filename_suffix=f".{os.getpid()}.{next(_WRITERS)}")
    self.path = self._writer._get_file_writer().event_writer._ev_writer._file_name

  def scalars(self, step: int, values: dict[str, float]) -> None:
    for tag, value in values.items():
      self._writer.add_scalar(tag, float(value), int(step))
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def read_events(path: str) -> list[tuple[int, dict[str, float]]]:
  """(step, {tag: value}) of each event with scalars in one event file, in file order; checks the CRCs. A
  record still being written at the end is left out."""
  with open(path, "rb") as f:
    data = f.read()
  out, offset = [], 0
  while offset + 12 <= len(data):
    (n,) = struct.unpack_from("<Q", data, offset)
    if struct.unpack_from("<I", data, offset + 8)[0] != masked_crc32c(data[offset:offset + 8]):
      raise ValueError(f"{path}: bad length CRC at byte {offset}")
    if offset + 16 + n > len(data):
      break
    payload = data[offset + 12:offset + 12 + n]
    if struct.unpack_from("<I", data, offset + 12 + n)[0] != masked_crc32c(payload):
      raise ValueError(f"{path}: bad data CRC at byte {offset}")
    offset += 16 + n
    event = event_pb2.Event.FromString(payload)
    scalars = {v.tag: v.simple_value for v in event.summary.value if v.HasField("simple_value")}
    if scalars:
      out.append((event.step, scalars))
  return out


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """tag -> [(step, value)] over every event file of logdir (oldest file first, as TensorBoard merges)."""
  out: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")), key=os.path.getmtime):
    for step, scalars in read_events(path):
      for tag, value in scalars.items():
        out.setdefault(tag, []).append((step, value))
  return out
