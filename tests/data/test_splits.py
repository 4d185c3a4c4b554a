"""Zero-shot class splits: named lists, list files, random:N, tolerant name matching, split invariants."""

from __future__ import annotations

import json
import os

import pytest

from ray_sbir.data.splits import (
    NAMED_SPLITS,
    ZeroShotSplit,
    class_key,
    load_unseen_classes,
    make_zero_shot_split,
    match_classes,
)

from tests.fixtures import QUICKDRAW_DIR

CLASSES = ["airplane", "cow", "hot air balloon", "palm tree", "teddy-bear", "tree", "windmill", "zebra",
           "fire hydrant", "The Eiffel Tower", "car_(sedan)", "bat"]


@pytest.mark.parametrize("name,count", [("sketchy_unseen21", 21), ("sketchy_unseen25", 25),
                                        ("tuberlin_unseen30", 30), ("quickdraw_unseen30", 30)])
def test_named_splits(name, count):
    assert name in NAMED_SPLITS
    classes = load_unseen_classes(name)
    assert len(classes) == count == len(set(classes))
    assert all(c == c.strip() and c for c in classes)


def test_named_split_maps_onto_dataset_spelling():
    qd = load_unseen_classes("quickdraw_unseen30")
    assert "fire_hydrant" in qd and "palm tree" in qd
    dataset = sorted({class_key(c) for c in qd} | {"apple", "axe"})  # spelled with spaces, as Quick, Draw!
    mapped = load_unseen_classes("quickdraw_unseen30", dataset)
    assert "fire hydrant" in mapped and "fire_hydrant" not in mapped and len(mapped) == 30


def test_quickdraw_split_matches_real_category_names():
    # The Quick, Draw! fixture has one file per category, named after it (spaces kept) as the dataset does.
    cats = [f[: -len(".ndjson")] for f in os.listdir(QUICKDRAW_DIR) if f.endswith(".ndjson")]
    mapped = load_unseen_classes("quickdraw_unseen30", cats)
    assert len(mapped) == 30 and set(mapped) <= set(cats)


def test_file_spec(tmp_path):
    p = tmp_path / "unseen.txt"
    p.write_text("# my unseen classes\n\nHot-Air_Balloon\n  cow  \nteddy bear # trailing comment\ncow\n")
    assert load_unseen_classes(str(p)) == ["Hot-Air_Balloon", "cow", "teddy bear"]
    assert load_unseen_classes(str(p), CLASSES) == ["hot air balloon", "cow", "teddy-bear"]
    assert load_unseen_classes("file://" + str(p), CLASSES) == ["hot air balloon", "cow", "teddy-bear"]
    with pytest.raises(FileNotFoundError, match="sketchy_unseen21"):
        load_unseen_classes(str(tmp_path / "missing.txt"), CLASSES)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no classes"):
        load_unseen_classes(str(empty), CLASSES)


def test_random_spec():
    a = load_unseen_classes("random:3", CLASSES, seed=1)
    assert len(a) == 3 and set(a) <= set(CLASSES)
    assert load_unseen_classes("random:3", CLASSES, seed=1) == a
    assert load_unseen_classes("random:3", list(reversed(CLASSES)), seed=1) == a  # input order irrelevant
    assert any(load_unseen_classes("random:3", CLASSES, seed=s) != a for s in range(2, 6))
    for bad in ("random:0", f"random:{len(CLASSES)}", "random:x"):
        with pytest.raises(ValueError):
            load_unseen_classes(bad, CLASSES)
    with pytest.raises(ValueError, match="all_classes"):
        load_unseen_classes("random:2")


def test_tolerant_matching_only_case_and_separators():
    assert match_classes(["HOT_AIR-BALLOON", "Teddy Bear", "the eiffel tower", "car_(sedan)"], CLASSES) == [
        "hot air balloon", "teddy-bear", "The Eiffel Tower", "car_(sedan)"]
    with pytest.raises(ValueError) as ei:
        match_classes(["cow", "zebras", "airplanes", "hotairballoon", "unicorn"], CLASSES)
    msg = str(ei.value)
    for name in ("zebras", "airplanes", "hotairballoon", "unicorn"):
        assert repr(name) in msg
    assert "'cow'" not in msg
    assert "close: 'zebra'" in msg and "close: 'airplane'" in msg  # difflib suggestions
    # exact spelling wins when two dataset folders differ only by separators
    assert match_classes(["teddy bear", "teddy_bear"], ["teddy bear", "teddy_bear"]) == ["teddy bear", "teddy_bear"]
    with pytest.raises(ValueError, match="several"):
        match_classes(["Teddy-Bear"], ["teddy bear", "teddy_bear"])


def test_seen_only_split_draws_validation_like_the_zero_shot_split():
    from ray_sbir.data.splits import seen_only_split

    s = seen_only_split(CLASSES, val_classes=0.25, seed=3)
    assert s.unseen == [] and len(s.val) == round(0.25 * len(CLASSES)) and set(s.train) | set(s.val) == set(CLASSES)
    assert seen_only_split([""], val_classes=2) == ZeroShotSplit(train=[""], val=[], unseen=[])


def test_zero_shot_split_disjoint_and_deterministic():
    s = make_zero_shot_split(CLASSES, ["Cow", "hot_air_balloon"], val_classes=0.25, seed=3)
    assert s.unseen == ["cow", "hot air balloon"]
    assert len(s.val) == round(0.25 * 10) and len(s.train) == 10 - len(s.val)
    assert set(s.train) | set(s.val) | set(s.unseen) == set(CLASSES)
    assert not (set(s.train) & set(s.val)) and not (set(s.seen) & set(s.unseen))
    assert make_zero_shot_split(CLASSES, ["cow", "hot air balloon"], val_classes=0.25, seed=3) == s
    shuffled = CLASSES[::-1]
    s2 = make_zero_shot_split(shuffled, ["cow", "hot air balloon"], val_classes=0.25, seed=3)
    assert set(s2.val) == set(s.val)  # which classes are held out does not depend on the input order
    assert any(set(make_zero_shot_split(CLASSES, ["cow"], val_classes=3, seed=k).val) != set(
        make_zero_shot_split(CLASSES, ["cow"], val_classes=3, seed=0).val) for k in range(1, 6))
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == {"train": s.train, "val": s.val, "unseen": s.unseen}
    assert ZeroShotSplit.from_dict(d) == s


def test_split_spec_forms_and_val_counts(tmp_path):
    s = make_zero_shot_split(CLASSES, "random:2", val_classes=2, seed=0)
    assert len(s.unseen) == 2 and len(s.val) == 2 and len(s.train) == 8
    assert make_zero_shot_split(CLASSES, "random:2", val_classes=0, seed=0).val == []
    assert len(make_zero_shot_split(CLASSES, "random:2", val_classes=0.01, seed=0).val) == 1  # at least one
    assert len(make_zero_shot_split(CLASSES, "random:2", val_classes=3.0, seed=0).val) == 3  # integral float
    few = ["a", "b", "c"]
    assert make_zero_shot_split(few, ["a"], val_classes=0.1).val == []  # 2 seen classes: none held out
    assert len(make_zero_shot_split(few + ["d"], ["a"], val_classes=0.1).val) == 1  # 3 seen classes
    assert len(make_zero_shot_split(few, ["a"], val_classes=0.9).train) == 1  # a fraction keeps a train class
    with pytest.raises(ValueError, match="no training class"):
        make_zero_shot_split(few, ["a"], val_classes=2)
    with pytest.raises(ValueError):
        make_zero_shot_split(few, ["a"], val_classes=1.5)
    with pytest.raises(ValueError, match="match no dataset class"):
        make_zero_shot_split(few, ["a", "zz"])
    with pytest.raises(ValueError, match="nothing left to train"):
        make_zero_shot_split(few, ["a", "b", "c"])
    with pytest.raises(ValueError, match="duplicate"):
        make_zero_shot_split(["a", "a", "b"], ["b"])
    with pytest.raises(ValueError, match="both train and unseen"):
        ZeroShotSplit(train=["a"], val=[], unseen=["a"])
    p = tmp_path / "u.txt"
    p.write_text("zebra\nwindmill\n")
    assert make_zero_shot_split(CLASSES, str(p), val_classes=0).unseen == ["windmill", "zebra"]
