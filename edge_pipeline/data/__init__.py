"""Datasets by recipe name: `build_data(config, seed)` -> DataBundle.

Importing this package stays torch-free (the pipeline computes the data's identity for the cache
key without torch, see identity.py); the torch-based modules load when a bundle is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .bundle import DataBundle


def build_data(config, seed: int) -> DataBundle:
    if config.dataset == "digits":
        from .digits import load_digits_bundle

        return load_digits_bundle(config, seed)
    if config.dataset == "mnist5k":
        from .digits import load_mnist5k_bundle

        return load_mnist5k_bundle(config, seed)
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

    from .bundle import stratified_indices

    idx = stratified_indices(bundle.train_labels, n, seed)
    subset = Subset(bundle.train, [int(i) for i in idx])
    return torch.stack([subset[i][0] for i in range(len(subset))])


def __getattr__(name: str):
    # DataBundle and stratified_indices live in the torch-based bundle module: load it on first use.
    if name in ("DataBundle", "stratified_indices"):
        from . import bundle

        return getattr(bundle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DataBundle", "build_data", "calibration_batch", "stratified_indices"]
