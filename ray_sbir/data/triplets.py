"""Triplet sampling: for each sketch anchor, a photo of its class (positive) and one of another (negative).

Sampling is a pure function of per-anchor uniforms, so the same uniforms give the same triplets wherever they
are drawn: the training pipeline draws them with Ray Data's seeded ``random()`` expression, which reseeds
per execution (= per epoch), and tests draw them with NumPy.
"""

from __future__ import annotations

import numpy as np


class TripletSampler:
    """Maps (anchor label, uniforms) -> (positive photo index, negative label, negative photo index).

    ``photo_labels[i]`` is the class index of photo ``i``. Negatives come uniformly from the other classes, or
    (``class_similarity`` given) from ``softmax(similarity / temperature)`` over the other classes, so
    semantically close classes, the hard cases, are drawn more often.
    """

    def __init__(self, photo_labels: np.ndarray, num_classes: int, class_similarity: np.ndarray | None = None,
                 temperature: float = 0.1):
        photo_labels = np.asarray(photo_labels, dtype=np.int64)
        if num_classes < 2:
            raise ValueError(f"triplets need at least 2 training classes, got {num_classes}")
        order = np.argsort(photo_labels, kind="stable")
        counts = np.bincount(photo_labels, minlength=num_classes)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            raise ValueError(f"training classes without photos (class indices {empty.tolist()[:10]})")
        self.num_classes = num_classes
        self._sorted = order  # photo indices grouped by class
        self._start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._count = counts
        if class_similarity is None:
            probs = np.ones((num_classes, num_classes))
        else:
            sim = np.asarray(class_similarity, dtype=np.float64)
            probs = np.exp((sim - sim.max(axis=1, keepdims=True)) / temperature)
        np.fill_diagonal(probs, 0.0)
        probs /= probs.sum(axis=1, keepdims=True)
        self._neg_cdf = np.cumsum(probs, axis=1)
        self._neg_cdf[:, -1] = 1.0  # guard against rounding leaving a gap at the top

    def _photo_of(self, labels: np.ndarray, u: np.ndarray) -> np.ndarray:
        offset = np.minimum((u * self._count[labels]).astype(np.int64), self._count[labels] - 1)
        return self._sorted[self._start[labels] + offset]

    def sample(self, labels: np.ndarray, u_pos: np.ndarray, u_neg_class: np.ndarray, u_neg: np.ndarray):
        labels = np.asarray(labels, dtype=np.int64)
        positive = self._photo_of(labels, np.asarray(u_pos))
        cdf = self._neg_cdf[labels]
        neg_labels = (cdf < np.asarray(u_neg_class)[:, None]).sum(axis=1)
        # u == 1.0 exactly or a zero-probability tail could land on the own class; step to the next one.
        neg_labels = np.where(neg_labels == labels, (labels + 1) % self.num_classes, neg_labels)
        negative = self._photo_of(neg_labels, np.asarray(u_neg))
        return positive, neg_labels, negative

    def sample_rng(self, labels: np.ndarray, rng: np.random.Generator):
        n = len(labels)
        return self.sample(labels, rng.random(n), rng.random(n), rng.random(n))
