"""Batching tile items whose channel sets differ (ragged panels).

Examples
--------
>>> import numpy as np
>>> a = {"image": np.ones((2, 4, 4), "float32"), "channel_present": np.array([True, False, True]),
...      "channel_names": ["CD3E", "DNA1"], "masks": {}, "tissue_id": "t1", "row": 0, "col": 0, "labels": {}}
>>> b = dict(a, image=np.ones((3, 4, 4), "float32"), channel_present=np.ones(3, bool),
...          channel_names=["CD3E", "CD20", "DNA1"], tissue_id="t2")
>>> batch = collate([a, b])
>>> batch["image"].shape, batch["image"][0, 1].max()  # CD20 is padded with zeros for t1
((2, 3, 4, 4), np.float32(0.0))
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["collate"]


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


def _stack(values: Sequence[Any]) -> Any:
    if _is_tensor(values[0]):
        import torch

        return torch.stack(list(values))
    return np.stack(values)


def _pad_images(images: Sequence[Any], present: Sequence[Any]) -> Any:
    """``(B, P, H, W)``: each image's channels placed at its ``channel_present`` positions, zeros elsewhere."""
    n_panel = len(present[0])
    if all(len(img) == n_panel for img in images):
        return _stack(images)
    height, width = images[0].shape[-2:]
    if _is_tensor(images[0]):
        out = images[0].new_zeros((len(images), n_panel, height, width))
    else:
        out = np.zeros((len(images), n_panel, height, width), dtype=images[0].dtype)
    for b, (img, mask) in enumerate(zip(images, present, strict=True)):
        out[b, mask] = img
    return out


def _column(values: list[Any], like_tensor: bool) -> Any:
    """Numbers become an array (a tensor when the batch holds tensors); anything else stays a list."""
    if values and all(isinstance(v, numbers.Number) and not isinstance(v, complex) for v in values):
        array = np.asarray(values)
        if like_tensor:
            import torch

            return torch.as_tensor(array)
        return array
    return values


def collate(batch: Sequence[dict]) -> dict:
    """Stack tile items into a batch, padding each image's channels to the dataset panel.

    Use it as ``DataLoader(dataset, collate_fn=spora_sd.ml.collate)``.

    Parameters
    ----------
    batch
        Items of a :class:`~spora_sd.ml.TileDataset` (torch tensors or numpy arrays).

    Returns
    -------
    dict
        ``image`` ``(B, P, H, W)`` in panel order with zeros where a tissue lacks a channel;
        ``channel_present`` ``(B, P)``; ``masks`` name -> ``(B, H, W)``; ``row``, ``col`` (and
        ``cell_id``) ``(B,)``; ``tissue_id`` and ``channel_names`` as lists; ``labels`` name -> ``(B,)``
        for numbers, else a list. Any other key becomes a list.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    first = batch[0]
    like_tensor = _is_tensor(first["image"])
    present = [item["channel_present"] for item in batch]
    out: dict[str, Any] = {
        "image": _pad_images([item["image"] for item in batch], present),
        "channel_present": _stack(present),
        "masks": {name: _stack([item["masks"][name] for item in batch]) for name in first.get("masks", {})},
        "labels": {
            name: _column([item["labels"][name] for item in batch], like_tensor) for name in first.get("labels", {})
        },
    }
    for key in first:
        if key not in out:
            out[key] = _column([item[key] for item in batch], like_tensor)
    return out
