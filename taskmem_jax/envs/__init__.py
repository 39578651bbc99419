"""Environments with known ground truth, for training and measuring memorization policies.

synthworld: a procedural room whose every event is an atomic fact, with question families modelled on
the benchmarks' task types, real mp4 streams, and a word-level tokenizer for tiny policies.
"""
