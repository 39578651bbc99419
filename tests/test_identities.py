"""Global <-> local face ids (memory/identities.py): window numbering order, rewriting both ways, loose tags."""

import pytest

from taskmem_jax.memory.identities import (UNKNOWN_FACE, normalize_tags, parse_identity, to_global, to_local,
                                           unknown_local_ids, window_ids)
from taskmem_jax.rewards.terms import FACE_TAGS


def test_window_ids_first_appearance_then_memory_references():
  visible = [(3.0, 12), (1.0, 40), (5.0, 40), (1.0, 7)]  # 40 and 7 tie at 1.0 s: input order
  speaking = [(0.5, 9), (2.0, 12)]
  memories = ["[face_40] waves at [face_88].", "[face_3] and [face_88] leave; [face_9] stays."]
  assert window_ids(visible, speaking, memories) == {9: 1, 40: 2, 7: 3, 12: 4, 88: 5, 3: 6}


def test_window_ids_plain_ids_and_empty():
  assert window_ids([5, 2], [2, 8]) == {5: 1, 2: 2, 8: 3}
  assert window_ids([5], [(0.0, 2)]) == {2: 1, 5: 2}  # untimed entries come after timed ones
  assert window_ids([], [], ["no faces here"]) == {}
  assert window_ids([], [], ["[face_4] then [face_4] then [face_1]"]) == {4: 1, 1: 2}


def test_to_local_and_back():
  mapping = window_ids([(0.0, 17), (1.0, 4)], [], ["[face_4] hands [face_17] a cup; [face_30] watches."])
  assert mapping == {17: 1, 4: 2, 30: 3}
  memory = "[face_4] hands [face_17] a cup; [face_30] watches."
  local = to_local(memory, mapping)
  assert local == "<face_2> hands <face_1> a cup; <face_3> watches."
  assert to_global(local, mapping) == memory
  with pytest.raises(ValueError, match=r"\[face_99\].*previous_memories"):
    to_local("[face_99] sits.", mapping)


@pytest.mark.parametrize("loose", ["face 3", "face_3", "(face_3)", "<face 3>", "<Face_3>", "Face-3", "face3",
                                   "[face_3]", "< face_3 >", "<face_3>"])
def test_normalize_loose_mentions(loose):
  assert normalize_tags(f"Then {loose} sits.") == "Then <face_3> sits."
  assert not FACE_TAGS.malformed(normalize_tags(f"Then {loose} sits."))


def test_normalize_leaves_other_text():
  text = "The surface 3 m wide, faces 2 ways; (the man, face_3) nods; <face> waits."
  assert normalize_tags(text) == "The surface 3 m wide, faces 2 ways; (the man, <face_3>) nods; <face> waits."


def test_to_global_normalises_then_maps():
  mapping = {21: 1, 8: 2}
  out = to_global("face 1 greets (face_2), and <Face 1> laughs.", mapping)
  assert out == "[face_21] greets [face_8], and [face_21] laughs."


def test_unknown_local_ids_marked_and_reported():
  mapping = {21: 1}
  text = "<face_1> talks to face 5 and <face_5>, then <face_7>."
  assert unknown_local_ids(text, mapping) == [5, 7]
  assert to_global(text, mapping) == f"[face_21] talks to {UNKNOWN_FACE} and {UNKNOWN_FACE}, then {UNKNOWN_FACE}."
  assert unknown_local_ids("<face_1> only", mapping) == []
  with pytest.raises(ValueError, match="same local id"):
    to_global("x", {1: 1, 2: 1})


def test_parse_identity():
  assert [parse_identity(v) for v in (3, "3", "[face_3]", "<face_3>", "face 3", None, "unknown", "")] == \
      [3, 3, 3, 3, 3, None, None, None]
  for bad in ("bob", -1, True, 2.5):
    with pytest.raises(ValueError):
      parse_identity(bad)
