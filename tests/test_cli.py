"""The `clavs` command: help, errors that name what is wrong, and the data subcommands."""

import subprocess
import sys

import pytest

from clavs.cli import main
from clavs.config import resolve_config
from clavs.engine.runner import build_audio_encoder


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "show", "runs", "table", "methods", "pretrain", "data"):
        assert cmd in out


def test_run_help_explains_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for opt in ("--method", "--protocol", "--split", "--preset", "--data-root", "--runs-dir", "--seed", "--epochs",
                "--devices", "--num-nodes", "--accelerator", "--precision", "--resume", "key=value"):
        assert opt in out


@pytest.mark.parametrize("flag,value,key", [("--precision", "8-bit", "engine.precision"),
                                            ("--num-nodes", "0", "engine.num_nodes")])
def test_distributed_options_reach_the_config(capsys, tmp_path, flag, value, key):
    code = main(["run", "--runs-dir", str(tmp_path), flag, value])
    assert code == 2
    assert key in capsys.readouterr().err  # validated as the config key it sets


def test_unknown_override_is_an_error_listing_valid_keys(capsys, tmp_path):
    code = main(["run", "--runs-dir", str(tmp_path), "train.epoch=3"])
    assert code == 2
    err = capsys.readouterr().err  # errors go to stderr, as one `error: ...` line
    assert err.startswith("error: ") and "train.epoch" in err and "train.epochs" in err


def test_options_and_overrides_may_be_intermixed(capsys, tmp_path):
    code = main(["run", "train.lrr=1", "--protocol", "til", "method.lra=false"])
    assert code == 2  # parsed (argparse would raise SystemExit), then rejected by the config with a message
    assert "train.lrr" in capsys.readouterr().err


def test_hyperparameter_of_the_wrong_type_is_named(capsys):
    assert main(["run", "method.lra=sometimes"]) == 2
    assert "method.lra='sometimes'" in capsys.readouterr().err


def test_resume_of_a_folder_that_is_not_a_run(capsys, tmp_path):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not a clavs run directory" in capsys.readouterr().err


def test_methods_lists_atlas_and_finetune(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "atlas" in out and "finetune" in out


def test_paper_preset_asks_for_the_cnn14_file():
    config = resolve_config(preset="paper")
    assert config["model"]["visual"] == "paper" and config["data"]["image_size"] == 224
    assert config["train"]["epochs"] == 30
    with pytest.raises(ValueError, match="model.audio_weights=/path/to/Cnn14"):
        build_audio_encoder(config)


def test_data_check_on_missing_root_fails(tmp_path):
    r = subprocess.run([sys.executable, "-m", "clavs.cli", "data", "check", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "nope" in r.stdout + r.stderr


def _fake_run(tmp_path, done=True):
    from clavs.results import RunDir

    run = RunDir(tmp_path / "run").create()
    run.write_config({"experiment": "x", "seed": 0, "protocol": {"name": "cil"}, "method": {"name": "atlas"}})
    run.write_matrices(2, {"map": {"R": [[50.0, 10.0], [40.0, 60.0]], "b": [5.0, 6.0]}})
    if done:
        run.write_summary({"map": {"la": 55.0, "aa": 50.0, "a_inc": 50.0, "forgetting": 10.0, "bwt": -10.0, "fwt": 5.0}})
        run.mark_done()
    return run.path


def test_show_prints_matrix_and_writes_heatmap(capsys, tmp_path):
    path = _fake_run(tmp_path)
    png = tmp_path / "heat.png"
    assert main(["show", str(path), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "60.00" in out and "Forgetting" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_unfinished_run_and_unknown_metric(capsys, tmp_path):
    path = _fake_run(tmp_path, done=False)
    assert main(["show", str(path)]) == 0
    assert "unfinished run" in capsys.readouterr().out
    assert main(["show", str(path), "--metric", "nope"]) == 2
    assert "no metric 'nope'" in capsys.readouterr().err


def test_runs_and_table_list_finished_runs(capsys, tmp_path):
    _fake_run(tmp_path)
    assert main(["runs", str(tmp_path)]) == 0
    assert "atlas" in capsys.readouterr().out
    assert main(["table", str(tmp_path)]) == 0
    assert "50.00" in capsys.readouterr().out


def test_resume_refuses_options_that_would_change_the_config(capsys, tmp_path):
    path = _fake_run(tmp_path, done=False)
    assert main(["run", "--resume", str(path), "--seed", "3", "train.lr=1"]) == 2
    out = capsys.readouterr().err
    assert "--seed" in out and "key=value" in out and "saved config.yaml" in out


def test_table_validation_split_markdown_and_exemplar_mark(capsys, tmp_path):
    from clavs.results import RunDir

    for seed, (test_aa, val_aa) in enumerate([(50.0, 40.0), (54.0, 44.0)]):
        run = RunDir(tmp_path / f"run{seed}").create()
        run.write_config({"experiment": "x", "seed": seed, "protocol": {"name": "cil"}, "method": {"name": "replayer"}})
        for split, aa in (("test", test_aa), ("val", val_aa)):
            run.write_matrices(1, {"map": {"R": [[aa]], "b": [1.0]}}, split=split)
            run.write_summary({"map": {"la": aa, "aa": aa, "a_inc": aa, "forgetting": None, "bwt": None, "fwt": None}},
                              split=split)
        run.write_profile({"method": {"name": "replayer", "family": "replay", "uses_exemplars": True}})
        run.mark_done()
    assert main(["table", str(tmp_path), "--split", "val", "--format", "md", "--layout", "runs"]) == 0
    out = capsys.readouterr().out
    assert "| x | cil | replayer | E | 0,1 | 42.00 ± 2.83 |" in out  # the two seeds of one config: one row
    assert main(["table", str(tmp_path), "--format", "md", "--layout", "runs"]) == 0
    assert "52.00 ± 2.83" in capsys.readouterr().out
    assert main(["table", str(tmp_path), "--format", "csv", "--layout", "runs"]) == 2
    assert "--layout runs prints rich or md" in capsys.readouterr().err


def test_methods_lists_families(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│ ") and line.split("│")[1].strip()}
    for name in ("finetune", "lwf", "ewc", "si", "mas", "atlas"):
        assert name in rows, name
        # family, whether it stores data, and the protocols it runs
        assert "│ no " in rows[name] and "til,cil,dil,tfcl" in rows[name], rows[name]
    assert "(1) exemplar-free CL adapted to AVS" in rows["ewc"] and "ATLAS (ours)" in rows["atlas"]


def test_a_declined_protocol_is_listed_with_its_reason_and_refused_with_it(capsys, monkeypatch):
    from clavs.methods import get_method_class

    cls = get_method_class("mas")
    monkeypatch.setattr(cls, "declined", {"tfcl": "needs task boundaries to fit its statistics"})
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "mas declines tfcl: needs task boundaries to fit its statistics" in out
    row = next(line for line in out.splitlines() if line.startswith("│ mas "))
    assert "til,cil,dil" in row and "tfcl" not in row
    with pytest.raises(ValueError, match="method 'mas' declines protocol 'tfcl': needs task boundaries"):
        cls.check_protocol("tfcl")
    cls.check_protocol("cil")  # accepted
