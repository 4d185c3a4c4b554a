"""The ``triplet`` sampler: one row per training triplet (Doodle to Search, Dey et al., CVPR 2019)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ray_sbir.data.decode import TripletBatchBuilder
from ray_sbir.data.samplers.base import BatchSampler, register_sampler


@register_sampler("triplet")
class TripletSampling(BatchSampler):
    """One row per training triplet: an anchor sketch, a photo of its class and one of another class
    (:class:`~ray_sbir.data.decode.TripletBatchBuilder`). The anchors are shuffled every epoch."""

    uniforms = ("u_pos", "u_neg_class", "u_neg")

    def rows(self, anchors: pa.Table, items_per_epoch: int, seed: int) -> pa.Table:
        if items_per_epoch != anchors.num_rows:
            # A fixed, seeded anchor multiset: repeat sketches to reach the requested epoch length.
            rng = np.random.default_rng(seed)
            pick = rng.choice(anchors.num_rows, size=items_per_epoch, replace=items_per_epoch > anchors.num_rows)
            anchors = anchors.take(np.sort(pick))
        return anchors

    def builder(self, anchors, photo_uris, photo_labels, num_classes, sketch_specs, photo_spec, augment,
                class_similarity=None, temperature=0.1):
        return TripletBatchBuilder(photo_uris, photo_labels, num_classes, sketch_specs, photo_spec, augment,
                                   class_similarity, temperature)
