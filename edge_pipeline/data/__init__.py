"""Datasets by recipe name: `build_data(config, seed)` -> DataBundle."""

from __future__ import annotations

from .bundle import DataBundle, stratified_indices


def build_data(config, seed: int) -> DataBundle:
    if config.dataset == "digits":
        from .digits import load_digits_bundle

        return load_digits_bundle(config, seed)
    if config.dataset == "imagefolder":
        from .folders import load_imagefolder_bundle

        return load_imagefolder_bundle(config, seed)
    if config.dataset == "cifar10":
        from .folders import load_cifar10_bundle

        return load_cifar10_bundle(config, seed)
    raise ValueError(f"unknown dataset {config.dataset!r}")  # the recipe schema prevents this


def calibration_batch(bundle: DataBundle, n: int, seed: int):
    """n normalized train inputs (NCHW tensor), stratified by class: the PTQ calibration set."""
    import torch

    from torch.utils.data import Subset

    idx = stratified_indices(bundle.train_labels, n, seed)
    subset = Subset(bundle.train, [int(i) for i in idx])
    return torch.stack([subset[i][0] for i in range(len(subset))])


__all__ = ["DataBundle", "build_data", "calibration_batch", "stratified_indices"]
