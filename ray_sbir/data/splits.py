"""Zero-shot class splits: which classes are unseen (test), and which seen classes train or validate.

Unseen-class specs (:func:`load_unseen_classes`)
    ``sketchy_unseen21`` ...   a named standard split shipped with the package (:data:`NAMED_SPLITS`; sources
                               in ``ray_sbir/assets/splits/PROVENANCE.md``)
    ``random:N``               N classes drawn from the dataset's classes, seeded
    anything else              a file URI (local path, ``file://``, ``s3://``): one class per line, blank
                               lines and ``#`` comments ignored

Names in a list are mapped onto the dataset's classes tolerating only case and ``_`` / ``-`` / space
differences (``hot-air_balloon`` matches ``hot air balloon``); the dataset's spelling is returned. A name that
matches nothing is an error (with close matches suggested), never silently dropped.
"""

from __future__ import annotations

import difflib
import numbers
import random
import re
from dataclasses import asdict, dataclass
from importlib import resources

from ray_sbir import fs

NAMED_SPLITS: tuple[str, ...] = ("sketchy_unseen21", "sketchy_unseen25", "tuberlin_unseen30", "quickdraw_unseen30")


def class_key(name: str) -> str:
    """Matching key of a class name: lower-cased, runs of ``_`` / ``-`` / whitespace as one space."""
    return " ".join(w for w in re.split(r"[\s_\-]+", name.strip().lower()) if w)


def parse_class_list(text: str) -> list[str]:
    """Class names of a list file: one per line; blank lines and ``#`` comments (whole-line or trailing)."""
    out = []
    for line in text.splitlines():
        name = line.split("#", 1)[0].strip()
        if name and name not in out:
            out.append(name)
    return out


def read_named_split(name: str) -> list[str]:
    """The class list of a named split, as spelled in the shipped file."""
    if name not in NAMED_SPLITS:
        raise ValueError(f"unknown named split {name!r}; named splits: {', '.join(NAMED_SPLITS)}")
    text = resources.files("ray_sbir").joinpath("assets", "splits", f"{name}.txt").read_text(encoding="utf-8")
    return parse_class_list(text)


def match_classes(names: list[str], all_classes: list[str], *, what: str = "class list") -> list[str]:
    """Map ``names`` onto ``all_classes``' spelling (tolerant to case and ``_``/``-``/space only).

    Order of ``names`` is kept, duplicates dropped. Raises ValueError listing every name that matches no
    class (with close matches), or that matches several dataset classes equally (none spelled exactly so).
    """
    by_key: dict[str, list[str]] = {}
    for c in all_classes:
        by_key.setdefault(class_key(c), []).append(c)
    exact = set(all_classes)
    out, unknown, ambiguous = [], [], []
    for n in names:
        if n in exact:
            hit = n
        else:
            cands = by_key.get(class_key(n), [])
            if len(cands) > 1:
                ambiguous.append(f"{n!r} -> {cands}")
                continue
            if not cands:
                unknown.append(n)
                continue
            hit = cands[0]
        if hit not in out:
            out.append(hit)
    problems = []
    if unknown:
        keys = list(by_key)
        lines = []
        for n in unknown:
            close = difflib.get_close_matches(class_key(n), keys, n=3, cutoff=0.6)
            hint = f" (close: {', '.join(repr(by_key[k][0]) for k in close)})" if close else ""
            lines.append(f"  {n!r}{hint}")
        problems.append(f"{len(unknown)} name(s) in the {what} match no dataset class:\n" + "\n".join(lines))
    if ambiguous:
        problems.append(f"name(s) in the {what} match several dataset classes: " + "; ".join(ambiguous))
    if problems:
        raise ValueError("\n".join(problems) + f"\n(the dataset has {len(all_classes)} classes)")
    return out


def _random_classes(n_spec: str, all_classes: list[str] | None, seed: int) -> list[str]:
    try:
        n = int(n_spec)
    except ValueError:
        raise ValueError(f"bad unseen-class spec 'random:{n_spec}': expected random:<count>") from None
    if all_classes is None:
        raise ValueError("random:N unseen classes need the dataset's classes (all_classes)")
    pool = sorted(set(all_classes))
    if not 0 < n < len(pool):
        raise ValueError(f"random:{n}: need 0 < N < {len(pool)} (the number of classes), leaving seen classes")
    rng = random.Random(f"ray-sbir/unseen/{seed}")
    chosen = set(rng.sample(pool, n))
    return [c for c in pool if c in chosen]


def load_unseen_classes(spec: str, all_classes: list[str] | None = None, seed: int = 0) -> list[str]:
    """Resolve an unseen-class spec (named split, ``random:N`` or a list-file URI) to class names.

    With ``all_classes``, names are returned in the dataset's spelling (see :func:`match_classes`) and unknown
    names raise ValueError; without it, the list is returned as written (``random:N`` needs it). ``random:N``
    returns its classes sorted; lists keep their order.
    """
    spec = spec.strip()
    if spec.startswith("random:"):
        return _random_classes(spec.split(":", 1)[1].strip(), all_classes, seed)
    if spec in NAMED_SPLITS:
        names, what = read_named_split(spec), f"named split {spec}"
    else:
        if not fs.exists(spec) or fs.isdir(spec):
            raise FileNotFoundError(
                f"unseen-class list not found: {spec!r} (expected a named split: {', '.join(NAMED_SPLITS)}; "
                "random:N; or a text file with one class per line)"
            )
        names, what = parse_class_list(fs.read_text(spec)), f"class list {spec}"
    if not names:
        raise ValueError(f"{what} lists no classes")
    if all_classes is None:
        return names
    return match_classes(names, all_classes, what=what)


@dataclass
class ZeroShotSplit:
    """Disjoint class sets: ``train`` (seen, trained on), ``val`` (seen, held out for model selection) and
    ``unseen`` (zero-shot test classes, never seen in training)."""

    train: list[str]
    val: list[str]
    unseen: list[str]

    def __post_init__(self):
        sets = {"train": set(self.train), "val": set(self.val), "unseen": set(self.unseen)}
        for a, b in (("train", "val"), ("train", "unseen"), ("val", "unseen")):
            both = sets[a] & sets[b]
            if both:
                raise ValueError(f"zero-shot split: classes in both {a} and {b}: {sorted(both)}")

    @property
    def seen(self) -> list[str]:
        return self.train + self.val

    def to_dict(self) -> dict[str, list[str]]:
        """Plain dict (JSON-ready) of the three lists, for writing beside a run."""
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "ZeroShotSplit":
        return cls(list(d["train"]), list(d.get("val", [])), list(d["unseen"]))


def _val_count(val_classes: int | float, n_seen: int) -> int:
    if isinstance(val_classes, bool):
        raise TypeError("val_classes must be a count or a fraction, not a bool")
    if isinstance(val_classes, numbers.Integral):
        val_classes = int(val_classes)
    elif isinstance(val_classes, numbers.Real):
        val_classes = float(val_classes)
        if val_classes >= 1:
            if not val_classes.is_integer():
                raise ValueError(f"val_classes={val_classes}: a fraction must be < 1, a count a whole number")
            val_classes = int(val_classes)
    else:
        raise TypeError(f"val_classes must be a count or a fraction, got {val_classes!r}")
    if isinstance(val_classes, int):
        n = val_classes
    else:
        if val_classes < 0:
            raise ValueError(f"val_classes={val_classes} must be >= 0")
        n = int(round(val_classes * n_seen))
        if val_classes > 0 and n == 0 and n_seen >= 3:
            n = 1  # a positive fraction always holds out at least one class when there are enough
    if n < 0:
        raise ValueError(f"val_classes={val_classes} must be >= 0")
    if n >= n_seen and n > 0:
        if isinstance(val_classes, int):
            raise ValueError(f"val_classes={val_classes} leaves no training class ({n_seen} seen classes)")
        n = n_seen - 1
    return n


def make_zero_shot_split(
    all_classes: list[str],
    unseen: str | list[str],
    *,
    val_classes: int | float = 0.1,
    seed: int = 0,
) -> ZeroShotSplit:
    """Split a dataset's classes into train / validation (both seen) and unseen classes.

    ``unseen``: a spec for :func:`load_unseen_classes` or a list of names (matched the same tolerant way).
    ``val_classes``: a count (int) or a fraction of the seen classes (float < 1); a positive fraction holds
    out at least one class when there are >= 3 seen classes; 0 holds out none. The validation classes are
    drawn with ``seed`` independently of the order of ``all_classes``; every list follows the order of
    ``all_classes``.
    """
    if len(set(all_classes)) != len(all_classes):
        dup = sorted({c for c in all_classes if all_classes.count(c) > 1})
        raise ValueError(f"duplicate class names: {dup}")
    if isinstance(unseen, str):
        unseen_list = load_unseen_classes(unseen, all_classes, seed=seed)
    else:
        unseen_list = match_classes(list(unseen), all_classes, what="unseen classes")
    if not unseen_list:
        raise ValueError("a zero-shot split needs at least one unseen class")
    unseen_set = set(unseen_list)
    seen = [c for c in all_classes if c not in unseen_set]
    if not seen:
        raise ValueError("every class is unseen: nothing left to train on")
    split = seen_only_split(seen, val_classes=val_classes, seed=seed)
    return ZeroShotSplit(split.train, split.val, unseen=[c for c in all_classes if c in unseen_set])


def seen_only_split(classes: list[str], *, val_classes: int | float = 0.1, seed: int = 0) -> ZeroShotSplit:
    """Every class seen (``data.unseen: none``): train and validation classes drawn as in
    :func:`make_zero_shot_split`, no unseen ones (a gallery to embed, a model trained on all classes). One
    class (an unlabelled gallery) holds out none."""
    n_val = _val_count(val_classes, len(classes)) if len(classes) > 1 else 0
    rng = random.Random(f"ray-sbir/val/{seed}")
    val_set = set(rng.sample(sorted(classes), n_val))
    return ZeroShotSplit(train=[c for c in classes if c not in val_set], val=[c for c in classes if c in val_set],
                         unseen=[])
