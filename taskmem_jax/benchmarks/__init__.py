"""Benchmarks as streams: loaders for VideoMME, EgoLife and EgoTempo, the common types, and the perception
inputs (overlay.py). See base.py for what a loader yields; SynthWorld's benchmark lives with the world,
envs.synthworld.benchmark."""

from taskmem_jax.benchmarks.base import (AnnotationError, Benchmark, LoadError, Question, Segment, Stream,
                                         read_annotations)
from taskmem_jax.benchmarks.egolife import clock_seconds, load_egolife
from taskmem_jax.benchmarks.egotempo import load_egotempo, parse_clip_id
from taskmem_jax.benchmarks.videomme import load_videomme

LOADERS = {"videomme": load_videomme, "egolife": load_egolife, "egotempo": load_egotempo}

__all__ = ["AnnotationError", "Benchmark", "LOADERS", "LoadError", "Question", "Segment", "Stream", "clock_seconds",
           "load_egolife", "load_egotempo", "load_videomme", "parse_clip_id", "read_annotations"]
