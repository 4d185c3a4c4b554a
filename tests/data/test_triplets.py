import numpy as np
import pytest

from ray_sbir.data.triplets import TripletSampler


def test_triplet_invariants_uniform():
    rng = np.random.default_rng(0)
    photo_labels = rng.integers(0, 5, size=200)
    photo_labels[:5] = np.arange(5)  # every class has photos
    sampler = TripletSampler(photo_labels, 5)
    labels = rng.integers(0, 5, size=5000)
    pos, neg_labels, neg = sampler.sample_rng(labels, rng)
    assert np.all(photo_labels[pos] == labels)
    assert np.all(neg_labels != labels)
    assert np.all(photo_labels[neg] == neg_labels)
    # negatives spread over all other classes, positives over all photos of the class
    for c in range(5):
        others = np.unique(neg_labels[labels == c])
        assert set(others) == set(range(5)) - {c}
    assert len(np.unique(pos)) > 150


def test_same_uniforms_same_triplets_and_extremes():
    photo_labels = np.array([0, 0, 1, 1, 2])
    sampler = TripletSampler(photo_labels, 3)
    labels = np.array([0, 1, 2, 2])
    u = np.array([0.0, 0.999999, 1.0, 0.5])
    a = sampler.sample(labels, u, u, u)
    b = sampler.sample(labels, u, u, u)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    pos, neg_labels, neg = a
    assert np.all(photo_labels[pos] == labels) and np.all(neg_labels != labels)


def test_semantic_negatives_prefer_similar_classes():
    photo_labels = np.repeat(np.arange(3), 4)
    sim = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 1.0]])
    sampler = TripletSampler(photo_labels, 3, class_similarity=sim, temperature=0.1)
    rng = np.random.default_rng(1)
    labels = np.zeros(4000, dtype=np.int64)
    _, neg_labels, _ = sampler.sample_rng(labels, rng)
    frac_close = np.mean(neg_labels == 1)
    assert frac_close > 0.99  # exp(0.9/0.1) vs exp(0): class 1 dominates
    assert np.all(neg_labels != 0)


def test_errors():
    with pytest.raises(ValueError, match="at least 2"):
        TripletSampler(np.array([0, 0]), 1)
    with pytest.raises(ValueError, match="without photos"):
        TripletSampler(np.array([0, 0, 2]), 3)
