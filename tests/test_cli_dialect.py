"""The CLI speaks one dialect (STYLE.md, "What a user reads"): one name per concept, every flag with
help and its default, `--json` alone on stdout, figures with units at the precision they have,
an error as one line saying what to do, and no TensorFlow start-up noise."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from recipes import tiny_recipe

from pipelines.cli import build_parser, command_parsers, main
from pipelines.report_format import (
    FRACTION,
    evaluation_units,
    format_estimate,
    format_figure,
    format_interval,
    format_percent,
    has_interval,
    json_document,
    pooled_unit,
    without_lone_intervals,
)

ROOT = Path(__file__).resolve().parents[1]
PARSERS = command_parsers(build_parser())
SWITCHES = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)
# every command whose parser offers --json; the end-to-end test below must print each one
JSON_COMMANDS = {"evaluate", "inspect", "models", "retrain", "rollback", "train"}


def visible_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if not isinstance(a, argparse._HelpAction) and a.help != argparse.SUPPRESS]


def option_names(command: str) -> set[str]:
    return {name for a in visible_options(PARSERS[command]) for name in a.option_strings}


# --- flags -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_visible_option_has_help_and_states_its_default(command):
    # House style: the help text says "(default X)" itself; a switch (--json) is off unless given
    problems = []
    for action in visible_options(PARSERS[command]):
        name = "/".join(action.option_strings) or action.dest
        if not (action.help or "").strip():
            problems.append(f"{name}: no help text")
        has_default = action.default is not None and action.default != argparse.SUPPRESS
        if has_default and not isinstance(action, SWITCHES) and "default" not in action.help:
            problems.append(f"{name}: default {action.default!r} not in its help")
    assert problems == []


def test_the_commands_with_json_are_the_ones_tested_end_to_end():
    assert {c for c in PARSERS if "--json" in option_names(c)} == JSON_COMMANDS


def _token_file_names(command: str) -> set[str]:
    return {n for n in option_names(command) if "token" in n}


def test_one_concept_has_one_name_across_commands():
    others = [c for c in PARSERS if c != "predict"]  # predict: the test below
    everywhere = {name for command in others for name in option_names(command)}
    # the old spellings are aliases now, hidden from --help
    assert not everywhere & {"--run-dir", "--timeout", "--token-file", "--runs"}
    # --records is a list of record names (pull), --max-gap-s the gap that splits a row (ingest)
    assert [c for c in PARSERS if "--records" in option_names(c)] == ["pull"]
    assert [c for c in PARSERS if "--max-gap-s" in option_names(c)] == ["ingest"]
    for command in others:
        assert _token_file_names(command) <= {"--api-token-file", "--api_token_file"}, command
    for command in PARSERS:
        names = option_names(command)
        assert not any(n.startswith("--timeout") and n != "--timeout-s" for n in names), command
    assert "--out" in option_names("train") and "--out" in option_names("retrain")
    assert "--records-dir" in option_names("retrain")
    assert "--timeout-s" in option_names("pull")


def test_predict_names_its_token_file_as_serve_does():
    assert _token_file_names("predict") <= {"--api-token-file", "--api_token_file"}
    assert "--fill-gap-s" in option_names("predict")


@pytest.mark.parametrize("argv, dest, value", [
    (["train", "--config", "x.toml", "--run-dir", "r"], "out", "r"),
    (["retrain", "--model-name", "m", "--records", "new", "--run-dir", "r"], "records_dir", "new"),
    (["retrain", "--model-name", "m", "--records", "new", "--run-dir", "r"], "out", "r"),
    (["pull", "--db", "mitdb/1.0.0", "--timeout", "5"], "timeout_s", 5.0),
    (["demo", "--runs", "elsewhere"], "out", Path("elsewhere")),
])
def test_an_old_spelling_still_works_for_one_release(argv, dest, value):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value


def test_the_new_spelling_keeps_its_default_when_the_alias_is_not_given():
    assert build_parser().parse_args(["pull", "--db", "mitdb/1.0.0"]).timeout_s == 60.0
    assert build_parser().parse_args(["train", "--config", "x.toml"]).out is None


# --- figures -----------------------------------------------------------------------------------


def test_a_figure_carries_its_unit_and_three_significant_digits():
    assert format_figure(0.20431, "mV") == "0.204 mV"
    assert format_figure(5.8237, "mmHg") == "5.82 mmHg"
    assert format_figure(123.456, "mmHg") == "123 mmHg"
    assert format_figure(0.0712, FRACTION) == "7.1 %"
    assert format_figure(None, "mV") == format_figure(float("nan"), "mV") == "n/a"
    assert format_percent(0.029, signed=True) == "+2.9 %"


def test_an_interval_is_rounded_to_the_precision_of_its_figure():
    # what `train` printed before: 95% CI [-0.048816162416796205, 0.20110231624323993]
    assert format_interval(-0.048816162416796205, 0.20110231624323993, FRACTION) == \
        "[-4.9, 20.1] %"
    assert format_estimate(0.0712, (-0.048816162416796205, 0.20110231624323993), FRACTION) == \
        "7.1 % (95 % CI -4.9 to 20.1 %)"
    assert format_estimate(0.20431, (0.19832, 0.21107), "mV") == \
        "0.204 mV (95 % CI 0.198 to 0.211 mV)"
    assert format_interval(-0.0004, 0.0004, FRACTION) == "[0.0, 0.0] %"  # never -0.0


def test_a_group_of_one_record_or_patient_has_no_interval():
    assert not has_interval(1) and not has_interval(5, 1) and has_interval(2, 2)
    assert format_estimate(0.1, None, FRACTION) == "10.0 %"
    doc = without_lone_intervals({
        "n_patients": 3, "n_records": 3, "skill_ci95": [0.0, 0.2],
        "groups": {"alarm": {"one": {"n_patients": 1, "n_records": 1, "skill_ci95": [0.1, 0.1]},
                             "two": {"n_patients": 2, "n_records": 2, "skill_ci95": [0.0, 0.3]}}},
    })
    assert doc["skill_ci95"] == [0.0, 0.2]
    assert doc["groups"]["alarm"]["one"]["skill_ci95"] is None
    assert doc["groups"]["alarm"]["two"]["skill_ci95"] == [0.0, 0.3]


def test_the_evaluation_report_rounds_intervals_and_drops_them_for_one_record():
    from pipelines.evaluation.breakdown import GroupScore
    from pipelines.evaluation.metrics import compute_evaluation
    from pipelines.evaluation.report import render_markdown

    rng = np.random.default_rng(0)
    y = rng.normal(size=(60, 4, 1))
    patients = np.repeat([f"p{i}" for i in range(6)], 10)
    result = compute_evaluation(y, y + 0.1 * rng.normal(size=y.shape),
                                {"persistence": y + 0.3}, patients, n_boot=50)

    def group(n: int) -> GroupScore:
        return GroupScore(n_records=n, n_patients=n, n_windows=10 * n, mae=0.1,
                          baselines={"persistence": 0.3}, skill=0.66666, skill_ci95=(0.61234, 0.7),
                          skill_vs_cycle_median=None)

    result = dataclasses.replace(result, groups={"alarm": {"alone": group(1), "pair": group(2)}},
                                 groups_source="ALARMS")
    if hasattr(result, "units"):
        result = dataclasses.replace(result, units=("mV",))
    md = render_markdown(result)
    lo, hi = result.skill_ci95
    assert f"**{result.skill_mae_vs_best_baseline:.3f}**, 95% CI [{lo:.3f}, {hi:.3f}]" in md
    assert "| alone | 1 | 10 | 0.1 | 0.3 | 0.667 | - |" in md
    assert "| pair | 2 | 20 | 0.1 | 0.3 | 0.667 | [0.612, 0.700] |" in md
    if hasattr(result, "units"):
        assert "| forecaster | MAE (mV) | RMSE (mV) |" in md


def test_json_has_one_line_no_nan_and_units_beside_the_figures():
    text = json_document({"mae": np.float32(0.25), "skill": float("nan"), "n": np.int64(3),
                          "path": Path("a/b")})
    assert "\n" not in text and json.loads(text) == {"mae": 0.25, "skill": None, "n": 3,
                                                     "path": "a/b"}
    units = evaluation_units(pooled_unit(["mV"]))
    assert units["mae"] == units["rmse"] == "mV" and units["skill_ci95"] == FRACTION
    assert pooled_unit(["mV", "mmHg", "mV"]) == "mixed units: mV, mmHg"
    assert pooled_unit(["", None]) is None


# --- errors ------------------------------------------------------------------------------------


def test_a_missing_model_store_is_one_line_saying_what_to_do(tmp_path, caplog):
    assert main(["models", "--model-store", str(tmp_path / "nowhere")]) == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert errors[0].getMessage() == (
        f"model store {tmp_path / 'nowhere'} does not exist: pass --model-store with the folder "
        "`pulsecast train` publishes to (default data/model_store), or train a model first")


def test_a_bad_recipe_is_one_line_saying_what_to_do(tmp_path, caplog):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[data]\nfoo = 1\n')
    assert main(["train", "--config", str(bad), "--model-store", str(tmp_path / "s")]) == 1
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    message = error.getMessage()
    assert "\n" not in message and "unknown key(s) ['foo'] in [data]" in message
    assert message.endswith("fix the recipe (configs/ecg.toml shows every table and key)")
    assert main(["train", "--config", str(tmp_path / "none.toml")]) == 1
    assert caplog.records[-1].getMessage() == (
        f"recipe not found: {tmp_path / 'none.toml'}: pass --config with a recipe file, e.g. "
        "configs/ecg.toml")


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    import pipelines.commands.models as models_command

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(models_command, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["models", "--model-store", str(tmp_path)])


def _quiet_env() -> dict[str, str]:
    """This environment without the variables a user (or the Makefile) sets to quiet logs."""
    return {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY")}


def test_a_port_in_use_ends_in_one_line_without_a_traceback(tmp_path):
    (tmp_path / "store").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "serve", "--model-store",
             str(tmp_path / "store"), "--rest-api-port", str(port), "--port", "0"],
            cwd=ROOT, env=_quiet_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert errors == [done.stderr.splitlines()[-1]]
    assert errors[0].endswith(
        f"cannot bind the REST server to 127.0.0.1:{port}: the port is in use: stop the process "
        "using it, or pass another --rest-api-port (0 turns that API off)")


# --- TensorFlow's start-up logs ----------------------------------------------------------------

NATIVE_LOG = re.compile(r"^([IWEF]\d{4} \d\d:\d\d|WARNING: All log messages before absl)")


def test_a_command_that_loads_tensorflow_prints_no_cpp_logs_and_json_alone():
    # the user's environment sets no TF_CPP_MIN_LOG_LEVEL (the Makefile's is removed): the CLI
    # silences TensorFlow itself, without hiding a GPU (CUDA_VISIBLE_DEVICES is untouched)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "inspect", "--arch", "lstm", "--input-dim", "1",
         "--units", "4", "--input-steps", "5", "--horizon", "1", "--json"],
        cwd=ROOT, env=_quiet_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    noisy = [line for line in done.stderr.splitlines() if NATIVE_LOG.match(line)]
    assert noisy == [], done.stderr[-3000:]
    assert "cuInit" not in done.stderr
    assert json.loads(done.stdout)["ok"] is True


# --- every --json, end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> SimpleNamespace:
    from pipelines.sources.synth import SynthConfig, write_cohort

    root = tmp_path_factory.mktemp("dialect")
    write_cohort(SynthConfig(out=root / "raw", patients=12, minutes=2, seed=0))
    recipe = root / "tiny.toml"
    recipe.write_text(tiny_recipe(root / "raw", root / "ds", epochs=1, units=4, n_boot=20))
    return SimpleNamespace(root=root, recipe=recipe, store=root / "store")


@pytest.mark.slow
def test_every_json_flag_prints_one_document_and_the_text_carries_units(cohort, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(cohort.root)
    store = str(cohort.store)
    docs = {}

    def run(*argv: str) -> dict:
        assert main(list(argv)) == 0
        captured = capsys.readouterr()
        return json.loads(captured.out)  # fails on anything but one JSON document

    for n in (1, 2):
        docs["train"] = run("train", "--config", str(cohort.recipe), "--model-store", store,
                            "--out", str(cohort.root / f"run{n}"), "--json")
        assert docs["train"]["version"] == n
    assert docs["train"]["figure_units"]["mae"] == "mV"
    docs["evaluate"] = run("evaluate", "--model-name", "tiny", "--model-store", store,
                           "--dataset", str(cohort.root / "ds"), "--json")
    assert docs["evaluate"]["figure_units"]["skill_mae_vs_best_baseline"] == FRACTION
    docs["rollback"] = run("rollback", "--model-name", "tiny", "--to", "1", "--model-store",
                           store, "--json")
    assert {k: docs["rollback"][k] for k in ("from_version", "to_version", "published_as")} == {
        "from_version": 2, "to_version": 1, "published_as": 3}
    docs["models"] = run("models", "--model-store", store, "--json")
    tiny = docs["models"]["models"]["tiny"]
    assert [s["versions"] for s in tiny["test_sets"]] == [[1, 2, 3]]  # the same test records
    assert tiny["test_sets"][0]["dataset"] == str(cohort.root / "ds")
    assert tiny["test_sets"][0]["n_records"] >= 1
    v3 = tiny["versions"][2]
    assert v3["republished"] and v3["rolled_back_from"] == 1
    # a rollback copy keeps version 1's created_at; it was published when it was rolled back
    assert v3["created_at"] == tiny["versions"][0]["created_at"] != v3["published_at"]
    # the records are in the dataset already: nothing new, nothing trained
    docs["retrain"] = run("retrain", "--model-name", "tiny", "--records-dir",
                          str(cohort.root / "raw"), "--model-store", store, "--json")
    assert docs["retrain"]["status"] == "nothing_new" and not docs["retrain"]["records_added"]
    docs["inspect"] = run("inspect", "--config", str(cohort.recipe), "--json")
    assert set(docs) == JSON_COMMANDS

    # the test split holds one patient: a skill without an interval; every patient: with one
    assert docs["evaluate"]["n_patients"] == 1 and docs["evaluate"]["skill_ci95"] is None
    for split, interval in (("test", r" \(no interval: 1 patient\)"),
                            ("all", r" \(95 % CI -?\d+\.\d to -?\d+\.\d %\)")):
        assert main(["evaluate", "--model-name", "tiny", "--model-store", store, "--dataset",
                     str(cohort.root / "ds"), "--split", split]) == 0
        text = capsys.readouterr().out
        assert re.search(r"MAE \d\.\d\d\d mV; best baseline \w+ \d\.\d\d\d mV; skill", text), text
        assert re.search(rf"skill \(1 - MAE / \w+'s\) -?\d+\.\d %{interval}\n", text), text
    assert main(["models", "--model-store", store]) == 0
    table = capsys.readouterr().out
    assert "tiny: 3 version(s) on 1 test set(s)" in table and "MAE (mV)" in table
    assert "re-published copy of 1 (rollback)" in table
