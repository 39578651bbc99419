"""Streaming episodic memory: the store, the window prompt, and reading memories out of responses.

store (clip id -> description, the sliding-window schedule, the QA serialisation) <- prompt (the
policy's window prompt) and parse (the strict format check of the RL reward, the lenient inference
parser). The modules that run the model, imported by name: sample (one window, G samples: sample_window),
loop (the Python rollout over windows, the reference), rollout (the jitted window scans) and memorise (the
rollout API over streams, memorise, and many windows' samples at once, sample_windows).
"""

from taskmem_jax.memory.parse import (EMPTY_DESCRIPTION, FORMAT_FAILURES, MULTIPLE_THINK_END, NO_THINK_END,
                                      NOT_A_DICT, NOT_A_STRING, NOT_JSON, OVER_BUDGET, WRONG_KEYS, ParseResult,
                                      parse_lenient, parse_response, strip_fences)
from taskmem_jax.memory.prompt import (MAX_TASK_QUESTIONS, WindowPrompt, prompt_words, read_window_prompt,
                                       window_messages, window_video_item, write_window_prompt)
from taskmem_jax.memory.store import (DEFAULT_CONTEXT, DEFAULT_INTERVAL, MAX_PREVIOUS, EpisodicMemory, StoreError,
                                      Window, format_seconds, schedule)

__all__ = [
    "DEFAULT_CONTEXT", "DEFAULT_INTERVAL", "EMPTY_DESCRIPTION", "FORMAT_FAILURES", "MAX_PREVIOUS",
    "MAX_TASK_QUESTIONS", "MULTIPLE_THINK_END", "NOT_A_DICT", "NOT_A_STRING", "NOT_JSON", "NO_THINK_END",
    "OVER_BUDGET", "WRONG_KEYS", "EpisodicMemory", "ParseResult", "StoreError", "Window", "WindowPrompt",
    "format_seconds", "parse_lenient", "parse_response", "prompt_words", "read_window_prompt", "schedule",
    "strip_fences", "window_messages", "window_video_item", "write_window_prompt",
]
