"""What a user meets on the first day: results that say what they measured, rows that differ read differently,
refusals that name every changed setting, and a reproduce command that checks before it runs."""
import dataclasses
import json

import pytest

from experiments.labels import model_name
from utils.engine.config import parse_config
from utils.evaluation.evaluate import evaluate
from utils.report import table

from conftest import TINY, run_script


@pytest.mark.parametrize("flag,value,word", [("--hidden-dim", "1024", "hidden 1024"), ("--seed", "1", "seed 1"),
                                             ("--lr", "0.1", "--lr 0.1"), ("--tcr-coef", "0.5", "--tcr-coef 0.5"),
                                             ("--inv-coef", "100", "--inv-coef 100.0")])
def test_runs_that_differ_in_one_setting_get_distinct_names(flag, value, word):
    base = model_name({"train_config": parse_config("empssl", "free", None, [])[0]})
    name = model_name({"train_config": parse_config("empssl", "free", None, [flag, value])[0]})
    assert name != base and word in name
    assert name.endswith("= CF-AMC-SSL") == (flag in ("--hidden-dim", "--seed"))  # sizes and seeds keep the name


def evaluate_run(run, *extra):
    evaluate("empssl", [*map(str, ["--checkpoint", run, "--device", "cpu", "--subset-train", 32, "--subset-test", 20,
                                   "--finetune-epochs", 1, "--pgd-steps", 1, *extra])])
    return json.loads((run / "eval-slf-pre-v1-last.json").read_text())


def test_the_report_marks_an_unfinished_run_and_a_checkpoint_changed_since(tmp_path, tiny_data):
    run = tmp_path / "run"
    train = ["main_empssl_free_adv.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--num-views", 2,
             "--replays", 1, "--knn-every", 0, "--out-dir", run]
    run_script(*train, "--epochs", 2, "--time-limit", 0.001, check=False)  # stopped at its first read-back
    result = evaluate_run(run)
    assert result["finished"] is False
    row = table([result]).splitlines()[2]
    assert "**unfinished**" in row and "changed" not in row and "| tmp" not in row and row.rstrip().endswith("/run |")
    run_script(*train, "--epochs", 2, "--resume", run)
    row = table([result]).splitlines()[2]
    assert "**unfinished**" in row and "**checkpoint changed since**" in row
    (run / "eval-slf-pre-v1-last.json").rename(run / "stale.json")
    again = evaluate_run(run)
    assert again["finished"] is True and "**" not in table([again]).splitlines()[2]


def test_a_resume_refusal_names_every_changed_flag_as_written(tmp_path, tiny_data):
    run_script("main_empssl_free_adv.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--num-views", 2,
               "--replays", 1, "--knn-every", 0, "--epochs", 1, "--out-dir", tmp_path)
    proc = run_script("main_empssl_free_adv.py", "--resume", tmp_path, "--eps", "4/255", "--lr", "0.1", check=False)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "--eps 4/255" in line and "--lr 0.1" in line and "8/255" in line
    assert "0.0156" not in line


def test_an_abbreviated_flag_is_refused_not_taken_for_another():
    proc = run_script("main_empssl.py", "--epoch", "1", "--device", "cpu", check=False)
    assert proc.returncode == 2 and "--epoch" in proc.stderr


def test_reproduce_refuses_a_bad_data_folder_before_any_row(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "test").mkdir()
    proc = run_script("-m", "utils.reproduce", "--scale", "smoke", "--data-dir", tmp_path / "data", "--out",
                      tmp_path / "out", "--device", "cpu", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "--data imagefolder" in lines[0]
    assert "row 1/" not in proc.stdout and not (tmp_path / "out").exists()


def test_rows_asked_later_add_to_the_table_never_shrink_it(tmp_path):
    from experiments.runner import RESULT
    from experiments.scales import SCALES
    from utils.core.files import write_json
    from utils.reproduce import all_rows, build_parser, write_results

    args = build_parser().parse_args(["--data", "imagefolder", "--data-dir", str(tmp_path), "--device", "cpu",
                                      "--out", str(tmp_path)])

    rows = {r.key: r for r in all_rows()}
    for key in ("crop-empssl-free", "crop-simclr-free"):
        (tmp_path / key).mkdir()
        write_json(tmp_path / key / RESULT, {"method": key.split("-")[1], "regime": "free", "clean": 40.0,
                                             "pgd": {"4/255": 20.0, "8/255": 10.0}, "n_test": 1000})
    write_results([rows["crop-empssl-free"]], SCALES["small"], args, {})
    text = (tmp_path / "results.md").read_text()
    assert "SimCLR" in text and "EMP-SSL" in text  # the row asked, and the row an earlier call finished


def test_ctrl_c_during_an_evaluation_keeps_its_finished_stages_and_the_rerun_continues(tmp_path, tiny_data,
                                                                                       monkeypatch, capsys):
    import utils.evaluation.evaluate as evaluate_module

    run = tmp_path / "run"
    run_script("main_empssl_free_adv.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--num-views", 2,
               "--replays", 1, "--knn-every", 0, "--epochs", 1, "--out-dir", run)
    argv = ["--checkpoint", str(run), "--device", "cpu", "--subset-train", "32", "--subset-test", "20",
            "--finetune-epochs", "1", "--pgd-steps", "1"]
    measured = evaluate_module.robust_accuracy

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "robust_accuracy", interrupted)
    with pytest.raises(SystemExit) as stop:
        evaluate_module.evaluate("empssl", argv)
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 130 and "kept the fitted head" in message and "run the same command again" in message
    assert (run / "partial-eval-slf-pre-v1-last.pt").is_file() and not (run / "eval-slf-pre-v1-last.json").exists()

    def no_refit(*args, **kwargs):
        raise AssertionError("the kept head should have been reused")

    monkeypatch.setattr(evaluate_module, "robust_accuracy", measured)
    slf = evaluate_module.PROTOCOLS["slf"]
    monkeypatch.setitem(evaluate_module.PROTOCOLS, "slf", dataclasses.replace(slf, fit=no_refit))
    result = evaluate_module.evaluate("empssl", argv)
    assert 0 <= result["clean"] <= 100 and set(result["pgd"]) == {"4/255", "8/255"}
    assert not list(run.glob("partial-*"))  # removed once the evaluation completed
