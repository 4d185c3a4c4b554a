"""Loss terms (a registry) and their weighted sum; plain PyTorch, no Ray.

Terms: ``triplet`` (given triplets or batch-hard mining), ``contrastive`` (in-batch InfoNCE, both directions,
class-aware positives), ``knowledge`` (ImageNet knowledge kept while fine-tuning, SAKE), ``relative_triplet``,
``domain`` (gradient reversal), ``semantic`` (word vectors), ``distill_embedding`` (student onto teacher), and
for hash codes ``pairwise_likelihood``, ``quantization`` and
``label_network`` (SSAH), ``similarity_regression`` (the learned re-ranker). See
:mod:`ray_sbir.losses.registry` for adding one.
"""

from ray_sbir.losses.gradient_reversal import GradientReversal, grad_reverse, reversal_lambda
from ray_sbir.losses.registry import (
    CompositeLoss, LossTerm, TermContext, TermOptions, list_terms, register_term, term_inputs, term_options,
    terms_need_class_vectors, validate_terms,
)

# Importing a term's module registers it.
from ray_sbir.losses import (contrastive, distill, domain, hashing, knowledge, relative_triplet, semantic, similarity,
                             triplet)  # noqa: E402,F401  isort: skip

__all__ = [
    "CompositeLoss", "GradientReversal", "LossTerm", "TermContext", "TermOptions", "grad_reverse", "list_terms",
    "reversal_lambda", "register_term", "term_inputs", "term_options", "terms_need_class_vectors", "validate_terms",
]
