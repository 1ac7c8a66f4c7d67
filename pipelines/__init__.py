"""Offline work: sources (synth, pull), ingest, datasets, windows, training, evaluation, retraining.

Nothing here runs at import; heavy libraries (wfdb, TensorFlow) load inside the functions that
need them.
"""
