"""Turning messages, images and videos into the model's inputs.

patchify (frames -> merge-block patch rows) <- image (smart_resize, bicubic) and video (decord
reading, frame sampling, video smart_resize, timestamps) <- processor (chat template, placeholder
and timestamp expansion, left-padded batches), with tokenizer (loading, the Qwen3-VL chat templates,
tiny tokenizers for test checkpoints).
"""

from taskmem_jax.processing.image import MediaError, load_image, preprocess_image, smart_resize
from taskmem_jax.processing.patchify import normalize, patchify
from taskmem_jax.processing.processor import ProcessorError, Qwen3VLProcessor, VisionInput
from taskmem_jax.processing.tokenizer import (CHAT_TEMPLATE, THINKING_CHAT_TEMPLATE, TokenizerError,
                                              apply_chat_template, build_tiny_tokenizer, check_tokenizer,
                                              load_tokenizer)
from taskmem_jax.processing.video import (VideoClip, preprocess_video, read_video, sample_frame_indices,
                                          video_smart_resize)

__all__ = [
    "CHAT_TEMPLATE", "THINKING_CHAT_TEMPLATE", "MediaError", "ProcessorError", "Qwen3VLProcessor", "TokenizerError",
    "VideoClip", "VisionInput", "apply_chat_template", "build_tiny_tokenizer", "check_tokenizer", "load_image",
    "load_tokenizer", "normalize", "patchify", "preprocess_image", "preprocess_video", "read_video",
    "sample_frame_indices", "smart_resize", "video_smart_resize",
]
