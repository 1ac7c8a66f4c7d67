"""Keras architectures, parameter-count formulas, export and the model store.

`models` imports neither `pipelines` nor `serve`.
"""
