"""A word-level tokenizer for SynthWorld's closed language, with Qwen's control tokens and ChatML template.

Vocabulary (`vocabulary`): "[UNK]" at id 0, then, sorted, every word and punctuation mark of the fact
and question templates, the colour / shape / region names, the digits 0-9, the option letters A-E (E:
the answerer abstains), the words of SynthWorld's window prompt (prompt.PROMPT), a few words of
answer prompts and of the processor's ``<t seconds>`` frame headers, newline, and the punctuation that
JSON and fenced code need; then the ten control tokens (QWEN_SPECIAL_IDS' keys, in that order).
`synthworld_model_config` sets a model config's vocab_size and vision token ids to match.

Encoding splits text at spaces and tabs (dropped), newlines (kept as a token), each punctuation mark,
and each digit; every piece is looked up whole, and anything outside the vocabulary becomes [UNK].

Decoding (DETOKENIZE_RULES, the same regexes in tokenizer.json's decoder and in `detokenize`): join the
tokens with single spaces, then delete the space
1. before  . , : ; ? ! ) ] } >
2. after  ( [ { <
3. on both sides of a newline
4. on both sides of  - _ / ' `  except after one that starts a line (so "- " bullets keep theirs)
5. on both sides of a control token (<|...|>, <think>, </think>)
6. inside a pair of double quotes, next to the quote: quotes pair up from the end of the text, so
   balanced quotes read back as JSON and prose write them: {"description": "..."}
7. between two digits, and between a digit followed by . or : and a digit (12, 12.5, 00:01:10).
Text that decoding reproduces exactly is canonical. Every fact sentence, question and option SynthWorld
writes is canonical (tested), which is why no sentence of it starts with a digit.
"""

from __future__ import annotations

import dataclasses
import os
import re
import string

from taskmem_jax.envs.synthworld import questions as questions_lib
from taskmem_jax.envs.synthworld import world as world_lib
from taskmem_jax.envs.synthworld.prompt import PROMPT
from taskmem_jax.envs.synthworld.render import COLOURS, REGIONS, SHAPES
from taskmem_jax.memory.prompt import write_window_prompt
from taskmem_jax.models.qwen3_vl.config import PRESETS, Qwen3VLConfig
from taskmem_jax.processing.tokenizer import CHAT_TEMPLATE, QWEN_SPECIAL_IDS, VISION_TOKENS, TokenizerError

UNK = "[UNK]"
CONTROL_TOKENS = tuple(QWEN_SPECIAL_IDS)
_NOT_SPECIAL = ("<think>", "</think>")  # Qwen marks the think tags as added but not special

# The chat template's roles, the processor's "<12.5 seconds>" frame headers, option letters and
# abstention (E), and a few words for answer prompts. Prompts with other words pass them as extra_words.
EXTRA_WORDS = ("user", "assistant", "system", "seconds", "A", "B", "C", "D", "E", "answer", "letter", "memory",
               "option", "options")
PUNCTUATION = tuple(".,:;?!()[]{}<>\"-_/'`*#")
DIGITS = tuple("0123456789")

DETOKENIZE_RULES = (
    r" (?=[.,:;?!)\]}>])",
    r"(?<=[(\[{<]) ",
    r" (?=\n)|(?<=\n) ",
    r" (?=[-_/'`])|(?<=[^\n][-_/'`]) ",
    r" (?=<\||</?think>)|(?<=\|>) |(?<=<think>) |(?<=</think>) ",
    # A quote followed by an odd number of quotes opens a pair; one followed by an even number closes it.
    # (?![\s\S]) is the end of the text in both engines; Oniguruma's $ also matches before a newline.
    r'(?<=") (?=[^"]*"(?:[^"]*"[^"]*")*[^"]*(?![\s\S]))| (?="(?:[^"]*"[^"]*")*[^"]*(?![\s\S]))',
    r"(?<=\d) (?=\d)|(?<=\d[.:]) (?=\d)",
)


def _pre_tokenizer():
  from tokenizers import Regex, pre_tokenizers
  return pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
      pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
      pre_tokenizers.Punctuation(behavior="isolated"),
      pre_tokenizers.Digits(individual_digits=True),
  ])


def pre_tokenize(text: str) -> list[str]:
  """The pieces encoding looks up (before [UNK] replacement)."""
  return [piece for piece, _ in _pre_tokenizer().pre_tokenize_str(text)]


def detokenize(tokens: list[str]) -> str:
  """Tokens -> text by DETOKENIZE_RULES; what the saved tokenizer's decode computes."""
  text = " ".join(tokens)
  for rule in DETOKENIZE_RULES:
    text = re.sub(rule, "", text)
  return text


def _literals(template: str) -> list[str]:
  return [literal for literal, _, _, _ in string.Formatter().parse(template)]


def vocabulary(extra_words=()) -> list[str]:
  """The regular tokens by id: [UNK], then every piece of SynthWorld's language (plus extra_words) sorted."""
  if isinstance(extra_words, str) or not all(isinstance(w, str) for w in extra_words):
    raise TypeError(f"extra_words={extra_words!r}: expected a list of strings")
  texts = [*(lit for t in world_lib.FACT_TEMPLATES.values() for lit in _literals(t)),
           *(lit for t in questions_lib.PHRASES for lit in _literals(t)),
           *COLOURS, *SHAPES, *REGIONS, *DIGITS, *PUNCTUATION, *EXTRA_WORDS, *PROMPT.words(), *extra_words, "\n"]
  # Pre-tokenization splits off every punctuation mark, so no piece can be [UNK] or a control token.
  return [UNK, *sorted({piece for text in texts for piece in pre_tokenize(text)})]


def token_ids(extra_words=()) -> dict[str, int]:
  """{token: id} for every token: the regular ones first, then the control tokens."""
  tokens = [*vocabulary(extra_words), *CONTROL_TOKENS]
  return {token: i for i, token in enumerate(tokens)}


# Spatial merge per render, so that one merged vision token covers exactly one region: the sprite room's
# 32-px regions are 2x2 patches of 16 px, the schematic room's 48-px regions 3x3 (vision_labels.py).
REGION_MERGE = {"sprites": 2, "schematic": 3}


def synthworld_model_config(base: Qwen3VLConfig | None = None, extra_words=(), render: str | None = None) -> Qwen3VLConfig:
  """`base` (default PRESETS["tiny"]) with vocab_size = the vocabulary's size and the four vision
  token ids where this tokenizer puts them. render: also set the vision tower's spatial merge to
  REGION_MERGE[render] (None keeps base's)."""
  base = PRESETS["tiny"] if base is None else base
  ids = token_ids(extra_words)
  text = dataclasses.replace(base.text, vocab_size=len(ids))
  vision = base.vision
  if render is not None:
    if render not in REGION_MERGE:
      raise ValueError(f"render={render!r}: expected one of {tuple(REGION_MERGE)}")
    vision = dataclasses.replace(vision, spatial_merge_size=REGION_MERGE[render])
  return base.replace(text=text, vision=vision, **{field: ids[token] for field, token in VISION_TOKENS.items()})


def build_synthworld_tokenizer(path: str | os.PathLike, extra_words=()) -> dict[str, int]:
  """Writes tokenizer.json + tokenizer_config.json (ChatML CHAT_TEMPLATE) to `path`, loadable by
  processing.load_tokenizer, and window_prompt.json (PROMPT: the only prompt wording this vocabulary
  covers, so a processor loaded from `path` uses it). Returns {token: id} of the ten control tokens."""
  from tokenizers import AddedToken, Regex, Tokenizer, decoders, models
  from transformers import PreTrainedTokenizerFast

  ids = token_ids(extra_words)
  # The control tokens sit in the model's vocab at their ids; added tokens already there keep them.
  tokenizer = Tokenizer(models.WordLevel(vocab=ids, unk_token=UNK))
  tokenizer.pre_tokenizer = _pre_tokenizer()
  # WordPiece's decoder joins with spaces (no token starts with its "##" prefix); Fuse makes one string
  # so that each Replace sees the whole text.
  tokenizer.decoder = decoders.Sequence([decoders.WordPiece(prefix="##", cleanup=False), decoders.Fuse(),
                                         *(decoders.Replace(Regex(rule), "") for rule in DETOKENIZE_RULES)])
  tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in CONTROL_TOKENS if t not in _NOT_SPECIAL])
  tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in _NOT_SPECIAL])
  specials = {t: ids[t] for t in CONTROL_TOKENS}
  got = {t: tokenizer.token_to_id(t) for t in CONTROL_TOKENS}
  if got != specials:  # the tokenizers library would have to have changed how it assigns ids
    raise TokenizerError(f"control tokens landed at {got}, expected {specials}")

  fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 unk_token=UNK, clean_up_tokenization_spaces=False)
  fast.chat_template = CHAT_TEMPLATE
  fast.save_pretrained(os.fspath(path))
  write_window_prompt(path, PROMPT)
  return specials
