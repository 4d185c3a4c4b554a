"""A ranking pipeline from one spec, in the spirit of FAISS's ``index_factory``: the retrieval over the index's
own scores, then stages, written as a short string or its YAML list form::

    exact > qe:20                        float index: exact inner product, then alpha-QE with 20 neighbours
    hamming:200 > rescore > qe:20:1.0    codes: 200 Hamming-nearest rows re-scored by the floats, then QE (alpha 1)
    hamming > rescore:200 > rerank:50    the same first two stages; the learned re-ranker over the first 50
    [hamming, {rescore: 200}, {qe: {n: 20, alpha: 1.0}}]        the list form of the second line

Stages (:data:`STAGES` of :mod:`ray_sbir.search.stages`, by name or alias; each registration declares its
parameters, alias and needs, so a new stage is one module and its registration): ``rescore:N`` (the first N rows
re-scored by the stored floats: indexes with codes), ``query_expansion:N[:ALPHA]`` (alias ``qe``) and
``rerank:N`` (a learned similarity over the first N, which needs a ``train.task=rerank`` checkpoint).
``hamming:N > rescore`` is ``hamming > rescore:N``. :meth:`SearchSpec.check` refuses, in one sentence, an unknown
stage, a bad parameter, or a stage the index's kind cannot run.

Whoever writes an index records how it is searched (its manifest's ``embedding`` and ``search`` entries:
:func:`default_spec` reads them back); ``search.pipeline`` in the config (``ray-sbir evaluate --search``) and the
serve config's ``search`` override it. Offline, :func:`build_pipeline` nests the stage classes over an index;
the serving engine runs the same :func:`build_pipeline` over each request's retrieval
(``ray_sbir.serving.engine.RequestIndex``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SearchSpec", "StageSpec", "build_pipeline", "default_spec"]

RETRIEVALS = ("exact", "hamming")


def _aliases() -> dict[str, str]:
    """Short names of the registered stages (``qe`` -> ``query_expansion``), from their registrations."""
    from ray_sbir.search.stages import STAGES

    return {STAGES.extra(name, "alias"): name for name in STAGES.names() if STAGES.extra(name, "alias")}


def _grammar(name: str) -> tuple[tuple[str, ...], int, tuple[type, ...]] | None:
    """A registered stage's ``(parameter names, how many are required, their types)`` as its registration
    declares them (``params=(("n", int), ("alpha", float)), required=1``); None for an unknown stage."""
    from ray_sbir.search.stages import STAGES

    if name not in STAGES:
        return None
    params = STAGES.extra(name, "params") or ()
    return tuple(n for n, _ in params), int(STAGES.extra(name, "required") or 0), tuple(t for _, t in params)


def _needs(name: str) -> str | None:
    """What a stage needs besides an index (its registration's ``needs``): ``codes`` or ``scorer``."""
    from ray_sbir.search.stages import STAGES

    return STAGES.extra(name, "needs")


@dataclass(frozen=True)
class StageSpec:
    name: str
    params: tuple = ()

    def options(self) -> dict:
        return dict(zip(_grammar(self.name)[0], self.params))

    def to_string(self) -> str:
        short = {v: k for k, v in _aliases().items()}.get(self.name, self.name)
        return ":".join([short, *(f"{p:g}" if isinstance(p, float) else str(p) for p in self.params)])


def _number(text: Any, kind: type, where: str):
    if isinstance(text, bool):
        raise ValueError(f"{where}: expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    try:
        value = kind(text) if isinstance(text, str) else text
    except ValueError:
        value = None
    if not isinstance(value, (int, float)) or (kind is int and (not isinstance(value, int) or value < 1)) \
            or (kind is float and value < 0):
        raise ValueError(f"{where}: expected {'an integer >= 1' if kind is int else 'a number >= 0'}, got {text!r}")
    return float(value) if kind is float else int(value)


def _stage(name: str, raw: list, where: str) -> StageSpec:
    aliases = _aliases()
    name = aliases.get(name, name)
    grammar = _grammar(name)
    if grammar is None:
        from ray_sbir.search.stages import STAGES

        known = ", ".join(sorted({*STAGES.names(), *aliases}))
        raise ValueError(f"{where}: unknown stage {name!r}; stages: {known} (after the retrieval: exact or hamming)")
    names, required, types = grammar
    if not required <= len(raw) <= len(names):
        raise ValueError(f"{where}: {name} takes {', '.join(names[:required])}"
                         f"{' [' + ', '.join(names[required:]) + ']' if len(names) > required else ''}, got {raw}")
    return StageSpec(name, tuple(_number(v, t, f"{where}: {name} {n}") for v, n, t in zip(raw, names, types)))


@dataclass(frozen=True)
class SearchSpec:
    retrieval: str  # exact | hamming
    stages: tuple[StageSpec, ...] = ()

    @classmethod
    def parse(cls, spec: Any, where: str = "search spec") -> "SearchSpec":
        """A string (``a > b:1 > c``) or a list (``[a, {b: 1}, {c: {n: 1}}]``) -> the spec; ValueError naming
        what is wrong."""
        items = _items(spec, where)
        if not items:
            raise ValueError(f"{where}: empty; expected e.g. 'exact > qe:20' or 'hamming:200 > rescore'")
        first, first_raw = items[0]
        if first not in RETRIEVALS:
            raise ValueError(f"{where}: must start with the retrieval (exact or hamming), got {first!r}")
        if len(first_raw) > 1:
            raise ValueError(f"{where}: {first} takes at most one number (the candidates of the next stage)")
        stages = []
        for i, (name, raw) in enumerate(items[1:]):
            if i == 0 and first_raw and _aliases().get(name, name) == "rescore" and not raw:
                raw = first_raw  # hamming:N > rescore
            stages.append(_stage(name, raw, where))
        if first_raw and (not stages or stages[0].name != "rescore" or stages[0].params != tuple(
                _number(v, int, where) for v in first_raw)):
            raise ValueError(f"{where}: {first}:{first_raw[0]} gives its candidates to a rescore stage after it")
        return cls(first, tuple(stages))

    def to_string(self) -> str:
        return " > ".join([self.retrieval, *(s.to_string() for s in self.stages)])

    def stage(self, name: str) -> StageSpec | None:
        return next((s for s in self.stages if s.name == name), None)

    def needs(self, what: str) -> bool:
        """Whether a stage of it needs ``what`` besides an index (its registration's ``needs``: ``codes`` or
        ``scorer``, the learned similarity of a ``train.task=rerank`` checkpoint)."""
        return any(_needs(s.name) == what for s in self.stages)

    def check_scorer(self, scorer) -> None:
        """Refuses, in one sentence, a ``scorer`` of None when a stage needs one."""
        if self.needs("scorer") and scorer is None:
            raise ValueError(f"search spec {self.to_string()!r}: rerank needs a train.task=rerank checkpoint")

    def scoring(self, kind) -> dict:
        """How its first stage scores, as ``/info`` and evaluation reports show it: the kind's scoring, with the
        rows a ``rescore`` stage re-scores."""
        rescore = self.stage("rescore")
        return kind.describe(rescore.params[0] if rescore is not None else 0)

    def check(self, kind, where: str = "search spec") -> None:
        """The index's kind can run this: Hamming retrieval and ``rescore`` need codes, ``exact`` needs none."""
        if self.retrieval == "hamming" and not kind.coded:
            raise ValueError(f"{where} {self.to_string()!r}: hamming retrieval needs an index with codes "
                             "(a hashing model's, or sign codes: search.codes_bits / --codes)")
        if self.retrieval == "exact" and kind.coded:
            raise ValueError(f"{where} {self.to_string()!r}: this index ranks by its codes: start with hamming")
        for stage in self.stages:
            if _needs(stage.name) == "codes" and not kind.coded:
                raise ValueError(f"{where} {self.to_string()!r}: {stage.name} re-scores Hamming candidates: this "
                                 "index has no codes")


def _items(spec: Any, where: str) -> list[tuple[str, list]]:
    """``[(name, [raw params])]`` of the string or list form."""
    if isinstance(spec, SearchSpec):
        return [(spec.retrieval, [])] + [(s.name, list(s.params)) for s in spec.stages]
    if isinstance(spec, str):
        if not spec.strip():
            return []
        out = []
        for part in spec.split(">"):
            name, *raw = [t.strip() for t in part.strip().split(":")]
            if not name:
                raise ValueError(f"{where} {spec!r}: an empty stage between '>'")
            out.append((name, raw))
        return out
    if isinstance(spec, list):
        out = []
        for item in spec:
            if isinstance(item, str):
                out.append((item, []))
            elif isinstance(item, dict) and len(item) == 1:
                (name, value), = item.items()
                if isinstance(value, dict):
                    names = (_grammar(_aliases().get(name, name)) or ((), 0, ()))[0]
                    unknown = sorted(set(value) - set(names))
                    if unknown:
                        raise ValueError(f"{where}: {name} has no parameter {unknown[0]!r}; it takes {names}")
                    out.append((name, [value[n] for n in names if n in value]))
                else:
                    out.append((name, list(value) if isinstance(value, list) else [value]))
            else:
                raise ValueError(f"{where}: a list item is a stage name or {{name: parameters}}, got {item!r}")
        return out
    raise ValueError(f"{where}: expected a string such as 'exact > qe:20' or a list, got {type(spec).__name__}")


def default_spec(kind, query_expansion=None, rescore_candidates: int | None = None) -> SearchSpec:
    """How an index is searched when nothing overrides it: its kind's retrieval, re-scoring as its codes say
    (``rescore_candidates`` None; 0: Hamming alone; n: that many), and the query expansion its manifest records."""
    stages = []
    if not kind.coded:
        candidates = 0
    else:
        candidates = kind.default_rescore if rescore_candidates is None else int(rescore_candidates)
    if candidates:
        stages.append(StageSpec("rescore", (candidates,)))
    if query_expansion is not None and query_expansion.on:
        stages.append(StageSpec("query_expansion", (query_expansion.n, float(query_expansion.alpha))))
    return SearchSpec("hamming" if kind.coded else "exact", tuple(stages))


def build_pipeline(spec: SearchSpec, base, *, scorer=None, wrap=None):
    """``base`` (an index ranking by its own scores) wrapped in the spec's stages, in order (the stage classes
    of :data:`~ray_sbir.search.stages.STAGES`); ``scorer``: the learned similarity a ``rerank`` stage uses;
    ``wrap(layer) -> layer``, when given, wraps each stage as it is added (the serving engine times them)."""
    from ray_sbir.search.stages import STAGES

    spec.check_scorer(scorer)
    index = base
    for stage in spec.stages:
        options = stage.options()
        if _needs(stage.name) == "scorer":
            options["scorer"] = scorer
        index = STAGES.get(stage.name)(index, **options)
        if wrap is not None:
            index = wrap(index)
    return index
