"""Loss terms in a registry, and the weighted sum built from ``loss.terms``.

A term is an ``nn.Module`` registered by name with the dataclass of its options (``weight`` and its own
settings). It reads the named tensors it needs (``inputs``) from the dict a training task's forward pass
produces and returns named values: its loss under its own name, plus any extra figures to log (for example
``domain_accuracy``), which are not summed. :class:`CompositeLoss` builds the configured terms, skips those
with weight 0, and returns ``{"loss": sum of weight * term, <term>: value, ...}`` (open_clip's losses return
named terms the same way).

Adding a term: write one module with an options dataclass and a ``LossTerm`` subclass, decorate it with
``@register_term("name", Options)``, and import it in ``ray_sbir/losses/__init__.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import torch
import torch.nn as nn

from ray_sbir.config import ConfigError, build_typed
from ray_sbir.registry import Registry, register_section_check


@dataclass
class TermOptions:
    """Options every term has; a term's own options dataclass extends this."""

    weight: float = 1.0


@dataclass
class TermContext:
    """What the model and data tell a term at construction time."""

    embed_dim: int
    unit_norm: bool = True  # embeddings are L2-normalised (then Euclidean distance is the natural one)
    class_vectors: torch.Tensor | None = None  # word vectors of the training classes, in label order
    num_classes: int | None = None  # training classes (labels are 0..num_classes-1)
    model: nn.Module | None = None  # the model being trained, before any step (terms that keep a frozen copy)


class LossTerm(nn.Module):
    """One loss term: ``forward(outputs, progress) -> {name: loss, extras...}``."""

    registered_name: str = ""  # set by the registry (@register_term)
    # Names of the tensors the term reads from the task's outputs (checked against what the task produces).
    inputs: tuple[str, ...] = ()

    def __init__(self, options: TermOptions):
        super().__init__()
        self.options = options
        self.inputs = self.required_inputs(options)

    @classmethod
    def required_inputs(cls, options: TermOptions) -> tuple[str, ...]:
        """The tensors the term reads with these options (by default the class's ``inputs``)."""
        return cls.inputs

    @classmethod
    def needs_class_vectors(cls, options: TermOptions) -> bool:
        """Whether the term reads the training classes' word vectors (``TermContext.class_vectors``) with these
        options: the training driver then loads them, and a missing file is reported before anything starts."""
        return False

    @property
    def name(self) -> str:
        return self.registered_name

    def forward(self, outputs: Mapping[str, torch.Tensor], progress: float) -> dict[str, torch.Tensor]:
        raise NotImplementedError


TERMS: Registry[type[LossTerm]] = Registry("loss term", key="loss.terms", package="ray_sbir.losses")


def register_term(name: str, options: type = TermOptions):
    """Class decorator: ``cls(options, context)`` builds the term; ``options`` is its options dataclass."""
    return TERMS.register(name, options=options)


def list_terms() -> list[str]:
    return TERMS.names()


def term_options(name: str, values: Mapping | None, where: str = "loss.terms") -> TermOptions:
    """Validated options of one term (the run config's mechanism: unknown keys and wrong types are errors)."""
    return build_typed(TERMS.extra(name, "options", f"{where}.{name}"), dict(values or {}), f"{where}.{name}")


def validate_terms(terms: Mapping, where: str = "loss.terms") -> None:
    if not terms:
        raise ConfigError(f"{where}: at least one loss term is needed; registered: {', '.join(list_terms())}")
    for name, values in terms.items():
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"{where}.{name}: expected a mapping of options (weight, ...), got {values!r}")
        opts = term_options(name, values, where)
        if opts.weight < 0:
            raise ConfigError(f"{where}.{name}.weight: must be >= 0, got {opts.weight}")


@register_section_check
def check_loss_section(cfg, check_paths: bool) -> None:
    validate_terms(cfg.loss.terms)


def terms_need_class_vectors(terms: Mapping[str, Mapping]) -> list[str]:
    """The terms with a weight above 0 that read class word vectors (in config order)."""
    out = []
    for name, values in terms.items():
        opts = term_options(name, values)
        if opts.weight > 0 and TERMS.get(name).needs_class_vectors(opts):
            out.append(name)
    return out


def term_inputs(terms: Mapping[str, Mapping]) -> set[str]:
    """Names of the tensors the terms with a weight above 0 read."""
    needed = set()
    for name, values in terms.items():
        opts = term_options(name, values)
        if opts.weight > 0:
            needed.update(TERMS.get(name).required_inputs(opts))
    return needed


class CompositeLoss(nn.Module):
    """The weighted sum of the configured terms (weight 0: skipped, its module not even built)."""

    def __init__(self, terms: Mapping[str, Mapping], context: TermContext):
        super().__init__()
        validate_terms(terms)
        self.weights: dict[str, float] = {}
        self.terms = nn.ModuleDict()
        for name, values in terms.items():
            opts = term_options(name, values)
            if opts.weight == 0:
                continue
            self.weights[name] = float(opts.weight)
            self.terms[name] = TERMS.get(name)(opts, context)
        if not self.terms:
            raise ConfigError("loss.terms: every term has weight 0; nothing to train")

    @property
    def inputs(self) -> set[str]:
        return {i for term in self.terms.values() for i in term.inputs}

    def options(self) -> dict[str, dict]:
        return {name: asdict(term.options) for name, term in self.terms.items()}

    def forward(self, outputs: Mapping[str, torch.Tensor], progress: float = 1.0) -> dict[str, torch.Tensor]:
        any_tensor = next(v for v in outputs.values() if isinstance(v, torch.Tensor))
        total = any_tensor.new_zeros((), dtype=torch.float32)
        values: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            out = term(outputs, progress)
            total = total + self.weights[name] * out[name]
            values.update(out)
        values["loss"] = total
        return values
