"""Nodule detection models: network definitions, registry (name, version, sha256, bound preprocessing),
training, evaluation metrics and shipped weights.

Modules are imported explicitly (`models.registry`, `models.inference`, ...); this package imports nothing,
so reading the registry does not pull in torch.
"""
