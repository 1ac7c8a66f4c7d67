"""`pulsecast inspect` and `pulsecast diagnose gradients`, called through `main(argv)`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("keras")

from pipelines.cli import main  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXTBOOK = ["--arch", "lstm", "--input-dim", "1", "--units", "32", "--input-steps", "5",
            "--horizon", "1"]


def test_inspect_prints_the_textbook_counts(capsys) -> None:
    assert main(["inspect", *TEXTBOOK]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    # columns: layer kind d h formula expected keras cuDNN
    assert rows["lstm_1"][1:4] == ["LSTM", "1", "32"]
    assert rows["lstm_1"][-3:] == ["4352", "4352", "yes"]
    assert rows["head"][1:4] == ["Dense", "32", "1"]
    assert rows["head"][-3:-1] == ["33", "33"]


def test_inspect_json_is_valid_and_complete(capsys) -> None:
    assert main(["inspect", *TEXTBOOK, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    layers = {row["name"]: row for row in doc["layers"]}
    assert (layers["lstm_1"]["expected"], layers["lstm_1"]["keras"]) == (4352, 4352)
    assert layers["lstm_1"]["cudnn"] is True
    assert (layers["head"]["expected"], layers["head"]["keras"]) == (33, 33)
    assert doc["ok"] is True and doc["total"]["expected"] == doc["total"]["keras"]


def test_inspect_reads_the_ecg_config(capsys) -> None:
    assert main(["inspect", "--config", str(REPO_ROOT / "configs" / "ecg.toml"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    layers = {row["name"]: row for row in doc["layers"]}
    recipe = tomllib.loads((REPO_ROOT / "configs" / "ecg.toml").read_text())
    h = recipe["model"]["units"][0]
    assert layers["lstm_1"]["keras"] == 4 * ((1 + h) * h + h)  # one input channel (lead II)
    assert doc["ok"] is True and doc["total"]["expected"] == doc["total"]["keras"]


def test_inspect_flags_override_the_config(capsys) -> None:
    config = str(REPO_ROOT / "configs" / "ecg.toml")
    assert main(["inspect", "--config", config, "--arch", "gru", "--units", "8", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    recipe = tomllib.loads((REPO_ROOT / "configs" / "ecg.toml").read_text())
    assert doc["spec"]["arch"] == "gru" and doc["spec"]["units"] == [8]
    assert doc["spec"]["input_steps"] == recipe["window"]["input_steps"]  # the rest from the file


def test_inspect_names_an_unknown_model_key(tmp_path: Path, caplog) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[window]\ninput_steps = 5\nhorizon = 1\ninputs = ["II"]\n'
                   '[model]\narch = "lstm"\nlayer_count = 2\n')
    assert main(["inspect", "--config", str(bad)]) == 1
    assert "unknown key in [model]: 'layer_count'" in caplog.text


@pytest.mark.slow
def test_diagnose_gradients_draws_a_png_and_prints_a_table(tmp_path: Path, capsys) -> None:
    code = main(["diagnose", "gradients", "--units", "4", "--input-steps", "16", "--horizon", "2",
                 "--windows", "64", "--epochs", "1", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    png = tmp_path / "gradients.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = next(line for line in out.splitlines() if line.strip().startswith("t "))
    assert header.split() == ["t", "lag", "simplernn", "irnn", "lstm"]
    assert "oldest/newest" in out
