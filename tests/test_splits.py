"""Patient-level splits: stable across runs and processes, fractions respected, bad input named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines.dataset.splits import (
    SplitError,
    assign_split,
    assign_splits,
    check_cohort_splits,
    cohort_splits,
    patient_unit,
    split_counts,
    validate_fractions,
)


def test_a_patient_gets_the_same_split_in_another_process_with_another_hash_seed() -> None:
    ids = [f"p{n:06d}" for n in range(50)]
    here = [assign_split(p) for p in ids]
    code = (
        "from pipelines.dataset.splits import assign_split;"
        f"print(','.join(assign_split(p) for p in {ids!r}))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip().split(",") == here


def test_the_hash_is_sha256_based_and_pinned() -> None:
    # pinned so a change of hash function (which would move patients between splits) fails here
    assert patient_unit("s25047") == int("74521741ddb83b55", 16) / 2**64
    assert assign_split("s25047") == assign_split("s25047")


def test_fractions_are_respected_over_many_patients() -> None:
    splits = assign_splits(f"patient-{n}" for n in range(20_000))
    counts = {s: list(splits.values()).count(s) for s in ("train", "val", "test")}
    assert counts["train"] / 20_000 == pytest.approx(0.7, abs=0.02)
    assert counts["val"] / 20_000 == pytest.approx(0.15, abs=0.02)
    assert counts["test"] / 20_000 == pytest.approx(0.15, abs=0.02)


def test_a_fraction_of_one_sends_every_patient_to_that_split() -> None:
    assert set(assign_splits(map(str, range(200)), (0.0, 0.0, 1.0)).values()) == {"test"}
    assert set(assign_splits(map(str, range(200)), (1.0, 0.0, 0.0)).values()) == {"train"}


def test_each_patient_appears_once_whatever_the_order_of_records() -> None:
    ids = ["b", "a", "b", "c", "a"]
    assert assign_splits(ids) == assign_splits(reversed(ids))
    assert sorted(assign_splits(ids)) == ["a", "b", "c"]


def test_fractions_that_do_not_sum_to_one_are_named() -> None:
    with pytest.raises(ValueError) as err:
        validate_fractions((0.5, 0.2, 0.2))
    assert str(err.value) == "split fractions must sum to 1, got (0.5, 0.2, 0.2)"


def test_negative_or_missing_fractions_are_named() -> None:
    with pytest.raises(ValueError, match=r"finite and >= 0, got \(1\.2, -0\.1, -0\.1\)"):
        validate_fractions((1.2, -0.1, -0.1))
    with pytest.raises(ValueError, match=r"must be 3 values .* got \(0\.5, 0\.5\)"):
        validate_fractions((0.5, 0.5))


# --- the cohort rule: no empty split when the cohort has a patient for each ---


def _ids(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(1, n + 1)]


@pytest.mark.parametrize("n", [3, 4, 8, 12, 20])
@pytest.mark.parametrize("prefix", ["p", "record-"])
def test_small_cohorts_get_a_patient_in_every_split(n: int, prefix: str) -> None:
    counts = split_counts(cohort_splits(_ids(n, prefix)))
    assert min(counts.values()) >= 1 and sum(counts.values()) == n


def test_eight_patients_that_the_hash_puts_all_in_train_get_one_in_val_and_one_in_test() -> None:
    ids = _ids(8)
    assert set(assign_splits(ids).values()) == {"train"}  # why the cohort rule exists
    assert split_counts(cohort_splits(ids)) == {"train": 6, "val": 1, "test": 1}


def test_a_cohort_of_a_hundred_keeps_exactly_the_hash_rule() -> None:
    for prefix in ("p", "record-", "s"):
        ids = _ids(100, prefix)
        assert cohort_splits(ids) == assign_splits(ids)


def test_the_order_and_repetition_of_ids_never_matter() -> None:
    import random

    for n in (3, 5, 8, 13):
        ids = _ids(n)
        shuffled = ids * 2
        random.Random(n).shuffle(shuffled)
        assert cohort_splits(shuffled) == cohort_splits(ids)


def test_only_the_patients_nearest_the_empty_splits_move() -> None:
    ids = _ids(8)  # all in train by the hash (u < 0.7)
    split_of = cohort_splits(ids)
    moved = {p for p in ids if split_of[p] != "train"}
    by_unit = sorted(ids, key=patient_unit)
    assert moved == set(by_unit[-2:])  # the two train patients closest to 0.7
    for n in (3, 4, 8, 12, 20, 50):
        hashed, balanced = assign_splits(_ids(n)), cohort_splits(_ids(n))
        assert sum(hashed[p] != balanced[p] for p in hashed) <= 2


def test_fewer_patients_than_splits_keep_the_hash_rule() -> None:
    for ids in (["a"], ["a", "b"], _ids(2)):
        assert cohort_splits(ids) == assign_splits(ids)


def test_a_split_given_no_fraction_stays_empty() -> None:
    split_of = cohort_splits(_ids(8), (0.8, 0.2, 0.0))
    assert split_counts(split_of)["test"] == 0 and split_counts(split_of)["val"] >= 1
    assert set(cohort_splits(_ids(8), (0.0, 0.0, 1.0)).values()) == {"test"}


def test_a_cohort_with_every_split_is_accepted() -> None:
    check_cohort_splits({"train": 6, "val": 1, "test": 1})
    check_cohort_splits({"train": 6, "val": 1, "test": 1}, {"train": 900, "val": 10, "test": 3})


def test_two_patients_are_refused_with_the_counts_and_the_fix() -> None:
    with pytest.raises(SplitError) as err:
        check_cohort_splits({"train": 2, "val": 0, "test": 0}, where="dataset ds")
    assert str(err.value) == (
        "dataset ds needs at least one patient in each of train/val/test, got train=2 val=0 "
        "test=0 (2 patients): ingest more patients (>= 3; with no patient ids in the records, "
        "each record counts as its own patient)")


def test_an_old_dataset_with_enough_patients_but_an_empty_split_is_told_to_ingest_again() -> None:
    with pytest.raises(SplitError, match=r"got train=8 val=0 test=0 \(8 patients\): ingest it "
                                         r"again with this pulsecast"):
        check_cohort_splits({"train": 8, "val": 0, "test": 0})


def test_a_split_without_windows_is_named_with_every_count() -> None:
    with pytest.raises(SplitError, match=r"has no windows in split 'test': got windows "
                                         r"train=900 val=10 test=0 from patients train=6 val=1 "
                                         r"test=1"):
        check_cohort_splits({"train": 6, "val": 1, "test": 1},
                            {"train": 900, "val": 10, "test": 0})
