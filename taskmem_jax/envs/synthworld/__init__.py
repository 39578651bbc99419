"""SynthWorld: a seeded top-down room streamed in 10-s clips, where every event is a ground-truth fact.

render (layout, palette, digit font, sprites) <- world (config, dynamics, facts: a World) <- questions
(task families, answers and distractors from the facts) and video (mp4 files read through the
processor's decord path, and the same clips rendered in memory); tokenizer (a word-level tokenizer over
the closed vocabulary, with Qwen's control tokens and chat template); vision_labels (per-token labels
for the vision stage of policy training).
"""

from taskmem_jax.envs.synthworld.questions import (LETTERS, TASK_KINDS, TASKS, WorldQuestion, facts_needed_by,
                                                   make_questions, make_tasks)
from taskmem_jax.envs.synthworld.render import COLOURS, REGIONS, SHAPES, Codebook
from taskmem_jax.envs.synthworld.tokenizer import (build_synthworld_tokenizer, detokenize, synthworld_model_config,
                                                   vocabulary)
from taskmem_jax.envs.synthworld.video import render_clip, write_stream
from taskmem_jax.envs.synthworld.world import (CLIP_SECONDS, KINDS, Fact, Scene, World, WorldConfig, generate,
                                               policy_render, policy_world, policy_world_config)

__all__ = [
    "CLIP_SECONDS", "COLOURS", "KINDS", "LETTERS", "REGIONS", "SHAPES", "TASKS", "TASK_KINDS", "Codebook", "Fact",
    "Scene", "World", "WorldConfig", "WorldQuestion", "build_synthworld_tokenizer", "detokenize", "facts_needed_by",
    "generate", "make_questions", "make_tasks", "policy_render", "policy_world",
    "policy_world_config", "render_clip", "synthworld_model_config", "vocabulary",
    "write_stream",
]
