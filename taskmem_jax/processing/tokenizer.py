"""Qwen3-VL tokenizer: load a checkpoint's tokenizer, the chat templates, and a tiny offline tokenizer.

- ``load_tokenizer(dir)`` wraps ``transformers.AutoTokenizer`` (local files only) and picks up the
  processor-level ``chat_template.json`` that the Hub repos ship next to the tokenizer.
- ``check_tokenizer(tokenizer, config)``: the four vision token ids must agree with the model config.
- ``CHAT_TEMPLATE`` / ``THINKING_CHAT_TEMPLATE``: ChatML as the Qwen3-VL Instruct and Thinking
  checkpoints ship it. There is no ``enable_thinking`` switch in either: Qwen3-VL comes as two separate
  checkpoint families, and the Thinking template always opens the reply with ``<think>\\n``.
- ``build_tiny_tokenizer(config, path)``: a small byte-level BPE whose special tokens sit at the ids a
  tiny random checkpoint expects, for tests and demos without network access.
"""

from __future__ import annotations

import json
import os
from typing import Any

from taskmem_jax.models.qwen3_vl.config import Qwen3VLConfig


class TokenizerError(ValueError):
  """A tokenizer that cannot be loaded, or that disagrees with the model config."""


# Config field -> the token whose id it must hold.
VISION_TOKENS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}
# Every control token the templates and the processor use, with its id in the published checkpoints.
QWEN_SPECIAL_IDS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|vision_start|>": 151652,
    "<|vision_end|>": 151653, "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656,
    "<think>": 151667, "</think>": 151668,
}
# Qwen marks the think tags as added but not special, so skip_special_tokens keeps them.
_NOT_SPECIAL = ("<think>", "</think>")

# --- Chat templates ---------------------------------------------------------------------------
# Written to render exactly what the Hub chat_template.json files render (transformers compiles them
# with trim_blocks and lstrip_blocks). Literal output is always emitted through {{- '...' }} so that
# the layout of this source never leaks into the prompt.

# render(content, vision, count): content is a string or a list of {"type": ..., ...} items. vision:
# emit image/video placeholders (else only text items survive); count: advance the "Picture k" /
# "Video k" counters that add_vision_id prints.
_MACROS = r"""
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- macro render(content, vision, count) %}
  {%- if content is string %}
    {{- content }}
  {%- else %}
    {%- for item in content %}
      {%- if vision and (item.type == 'image' or 'image' in item or 'image_url' in item) %}
        {%- if count %}{%- set image_count.value = image_count.value + 1 %}{%- endif %}
        {%- if add_vision_id %}{{- 'Picture ' ~ image_count.value ~ ': ' }}{%- endif %}
        {{- '<|vision_start|><|image_pad|><|vision_end|>' }}
      {%- elif vision and (item.type == 'video' or 'video' in item) %}
        {%- if count %}{%- set video_count.value = video_count.value + 1 %}{%- endif %}
        {%- if add_vision_id %}{{- 'Video ' ~ video_count.value ~ ': ' }}{%- endif %}
        {{- '<|vision_start|><|video_pad|><|vision_end|>' }}
      {%- elif 'text' in item %}
        {{- item.text }}
      {%- endif %}
    {%- endfor %}
  {%- endif %}
{%- endmacro %}
{%- macro render_tool_calls(message, has_content) %}
  {%- for tool_call in message.tool_calls %}
    {%- if (loop.first and has_content) or not loop.first %}{{- '\n' }}{%- endif %}
    {%- if tool_call.function %}{%- set tool_call = tool_call.function %}{%- endif %}
    {{- '<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' }}
    {%- if tool_call.arguments is string %}{{- tool_call.arguments }}
    {%- else %}{{- tool_call.arguments | tojson }}{%- endif %}
    {{- '}\n</tool_call>' }}
  {%- endfor %}
{%- endmacro %}
{%- macro tool_response(loop_index, content) %}
  {%- if loop_index == 0 or messages[loop_index - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
  {{- '\n<tool_response>\n' + content + '\n</tool_response>' }}
  {%- if loop_index == messages|length - 1 or messages[loop_index + 1].role != 'tool' %}
    {{- '<|im_end|>\n' }}
  {%- endif %}
{%- endmacro %}
"""

# The system turn: the first message when it is a system message, plus the tool signatures.
_SYSTEM = r"""
{%- if tools %}
  {{- '<|im_start|>system\n' }}
  {%- if messages[0].role == 'system' %}{{- render(messages[0].content, SYSTEM_VISION, false) + '\n\n' }}{%- endif %}
  {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
  {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
  {%- for tool in tools %}{{- '\n' + (tool | tojson) }}{%- endfor %}
  {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within ' }}
  {{- '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": ' }}
  {{- '<args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif messages[0].role == 'system' %}
  {{- '<|im_start|>system\n' + render(messages[0].content, SYSTEM_VISION, false) + '<|im_end|>\n' }}
{%- endif %}
"""

# Instruct: images and videos render only in user and tool turns; later system turns are dropped.
_INSTRUCT_TURNS = r"""
{%- for message in messages %}
  {%- if message.role == 'user' %}
    {{- '<|im_start|>user\n' + render(message.content, true, true) + '<|im_end|>\n' }}
  {%- elif message.role == 'assistant' %}
    {{- '<|im_start|>assistant\n' + render(message.content, false, false) }}
    {%- if message.tool_calls %}{{- render_tool_calls(message, message.content) }}{%- endif %}
    {{- '<|im_end|>\n' }}
  {%- elif message.role == 'tool' %}
    {{- tool_response(loop.index0, render(message.content, true, true)) }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""

# Thinking: every turn renders its images; assistant turns after the last real user query keep their
# reasoning as <think>...</think> (from reasoning_content or from the content), earlier ones lose it.
_THINKING_TURNS = r"""
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
  {%- if ns.multi_step_tool and message.role == 'user' %}
    {%- set content = render(message.content, true, false) %}
    {%- if not (content.startswith('<tool_response>') and content.endswith('</tool_response>')) %}
      {%- set ns.multi_step_tool = false %}
      {%- set ns.last_query_index = messages|length - 1 - loop.index0 %}
    {%- endif %}
  {%- endif %}
{%- endfor %}
{%- for message in messages %}
  {%- set content = render(message.content, true, true) %}
  {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
    {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
  {%- elif message.role == 'assistant' %}
    {%- set reasoning_content = '' %}
    {%- if message.reasoning_content is string %}
      {%- set reasoning_content = message.reasoning_content %}
    {%- elif '</think>' in content %}
      {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
      {%- set content = content.split('</think>')[-1].lstrip('\n') %}
    {%- endif %}
    {%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}
      {{- '<|im_start|>assistant\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' }}
      {{- content.lstrip('\n') }}
    {%- else %}
      {{- '<|im_start|>assistant\n' + content }}
    {%- endif %}
    {%- if message.tool_calls %}{{- render_tool_calls(message, content) }}{%- endif %}
    {{- '<|im_end|>\n' }}
  {%- elif message.role == 'tool' %}
    {{- tool_response(loop.index0, content) }}
  {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n<think>\n' }}{%- endif %}
"""


def _template(system_vision: str, turns: str) -> str:
  return (_MACROS + _SYSTEM.replace("SYSTEM_VISION", system_vision) + turns).strip() + "\n"


# The Instruct system turn keeps only text; the Thinking one renders (uncounted) placeholders.
CHAT_TEMPLATE = _template("false", _INSTRUCT_TURNS)
THINKING_CHAT_TEMPLATE = _template("true", _THINKING_TURNS)


def apply_chat_template(tokenizer, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
                        thinking: bool | None = None, **template_kwargs) -> str:
  """Renders one conversation to the prompt string (placeholders not yet expanded).

  thinking=None uses the checkpoint's own template (``tokenizer.chat_template``), or CHAT_TEMPLATE when
  it ships none. thinking=True / False forces THINKING_CHAT_TEMPLATE / CHAT_TEMPLATE: the templates of
  the two Qwen3-VL checkpoint families, so a Thinking prompt can be built from a checkpoint that ships
  the Instruct template (the tiny test checkpoints do). Extra keyword arguments (``add_vision_id``,
  ``tools``) go to the template.
  """
  if thinking is None:
    template = getattr(tokenizer, "chat_template", None) or CHAT_TEMPLATE
  else:
    template = THINKING_CHAT_TEMPLATE if thinking else CHAT_TEMPLATE
  return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                       add_generation_prompt=add_generation_prompt, **template_kwargs)


# --- Loading and checking ---------------------------------------------------------------------

_TOKENIZER_FILES = ("tokenizer.json", "vocab.json + merges.txt")


def load_tokenizer(checkpoint_dir: str | os.PathLike):
  """AutoTokenizer from a local checkpoint directory, with its chat template.

  Raises FileNotFoundError naming the directory and the files looked for, or TokenizerError when
  transformers cannot build a tokenizer from them.
  """
  from transformers import AutoTokenizer

  path = os.fspath(checkpoint_dir)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: checkpoint directory not found")
  has = lambda name: os.path.isfile(os.path.join(path, name))
  if not (has("tokenizer.json") or (has("vocab.json") and has("merges.txt"))):
    raise FileNotFoundError(f"{path}: no tokenizer files (looked for {' or '.join(_TOKENIZER_FILES)})")
  try:
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
  except Exception as e:  # transformers raises many types here; the caller needs the path
    raise TokenizerError(f"{path}: transformers could not load the tokenizer: {type(e).__name__}: {e}") from e
  # The Hub repos keep the template in the processor's chat_template.json, which AutoTokenizer skips.
  if not getattr(tokenizer, "chat_template", None) and has("chat_template.json"):
    with open(os.path.join(path, "chat_template.json"), encoding="utf-8") as f:
      tokenizer.chat_template = json.load(f)["chat_template"]
  return tokenizer


def check_tokenizer(tokenizer, config: Qwen3VLConfig) -> None:
  """Raises TokenizerError unless the tokenizer maps each vision token to the config's id, as a single
  token, and every tokenizer id fits the embedding table."""
  for field, token in VISION_TOKENS.items():
    expected = getattr(config, field)
    got = tokenizer.convert_tokens_to_ids(token)
    if got != expected:
      raise TokenizerError(f"{token}: the tokenizer gives id {got} but the model config's {field} is {expected}")
    pieces = tokenizer.encode(token, add_special_tokens=False)
    if pieces != [expected]:
      raise TokenizerError(f"{token}: the tokenizer splits it into {pieces}; it must be one added token")
  top = max(tokenizer.get_vocab().values())
  if top >= config.text.vocab_size:
    raise TokenizerError(f"the tokenizer has id {top}, beyond the model's text_config.vocab_size="
                         f"{config.text.vocab_size}")


# --- Tiny tokenizer ---------------------------------------------------------------------------

# Training text for the tiny BPE: its merges only need to make ordinary English a little shorter.
_CORPUS = """\
The agent watches a long video of a kitchen and answers questions about what it saw. Each clip lasts ten
seconds, and the model keeps a short memory of the task at hand: where the knife is, which drawer holds the
spoons, and whether the stove is still on. The user asks, "What is in the picture?" and the assistant
describes the image. When the question is about an earlier moment, the system looks back through its notes
instead of the raw frames. A good memory is small, focused on the task, and easy to update as new frames
arrive. Picture 1 shows a red cup on the table; Video 2 shows a person opening the fridge, taking out milk,
and pouring it into the cup. Think step by step, then give the answer in one or two sentences.
"""


def _special_ids(config: Qwen3VLConfig) -> dict[str, int]:
  """Vision tokens at the config's ids; the other control tokens at Qwen's ids when the config uses
  Qwen's layout, else at the highest free ids below vocab_size."""
  vocab = config.text.vocab_size
  ids = {token: getattr(config, field) for field, token in VISION_TOKENS.items()}
  if all(QWEN_SPECIAL_IDS[t] == i for t, i in ids.items()) and vocab > max(QWEN_SPECIAL_IDS.values()):
    return dict(QWEN_SPECIAL_IDS)
  free = (i for i in range(vocab - 1, -1, -1) if i not in ids.values())
  for token in QWEN_SPECIAL_IDS:
    if token not in ids:
      ids[token] = next(free)
  return {token: ids[token] for token in QWEN_SPECIAL_IDS}


def build_tiny_tokenizer(config: Qwen3VLConfig, path: str | os.PathLike) -> dict[str, int]:
  """Writes tokenizer.json + tokenizer_config.json (with CHAT_TEMPLATE) for a checkpoint of this config.

  A byte-level BPE trained on a short English paragraph. Regular tokens take the lowest ids the control
  tokens leave free. Below 512 regular ids there is no room for all 256 bytes, so the alphabet is
  printable ASCII plus tab and newline, and other characters are dropped on encode. Returns
  {token: id} for the ten control tokens (QWEN_SPECIAL_IDS' keys); every id is below vocab_size.
  """
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast

  vocab_size = config.text.vocab_size
  specials = _special_ids(config)
  regular_ids = [i for i in range(vocab_size) if i not in specials.values()]
  byte_to_char = _bytes_to_unicode()
  alphabet_bytes = range(256) if len(regular_ids) >= 512 else [9, 10, *range(32, 127)]
  alphabet = [byte_to_char[b] for b in alphabet_bytes]
  if len(regular_ids) < len(alphabet):
    raise TokenizerError(f"text_config.vocab_size={vocab_size} is too small for a tiny tokenizer: it needs "
                         f"{len(alphabet) + len(specials)} ids ({len(alphabet)} characters + {len(specials)} "
                         "control tokens)")

  bpe = Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = trainers.BpeTrainer(vocab_size=min(len(regular_ids), 4096), initial_alphabet=alphabet,
                                limit_alphabet=len(alphabet), show_progress=False)
  bpe.train_from_iterator([_CORPUS], trainer=trainer)
  trained = json.loads(bpe.to_str())["model"]
  # Move the trained tokens onto the free ids and put the control tokens into the model's vocab at
  # their own ids: added tokens that are already in the vocab keep those ids.
  order = sorted(trained["vocab"], key=trained["vocab"].get)
  vocab = {token: regular_ids[i] for i, token in enumerate(order)}
  vocab.update(specials)
  merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
  tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in specials if t not in _NOT_SPECIAL])
  tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in _NOT_SPECIAL])
  got = {t: tokenizer.token_to_id(t) for t in specials}
  if got != specials:  # the tokenizers library would have to have changed how it assigns ids
    raise TokenizerError(f"control tokens landed at {got}, expected {specials}")

  fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 clean_up_tokenization_spaces=False)
  fast.chat_template = CHAT_TEMPLATE
  fast.save_pretrained(os.fspath(path))
  return specials


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table, the alphabet of ByteLevel pre-tokenization."""
  from transformers.convert_slow_tokenizer import bytes_to_unicode
  return bytes_to_unicode()
