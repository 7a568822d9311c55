"""--time-limit: a run that cannot finish saves at the limit, exits 75, and the same command resumes it."""
import pytest
import torch

from utils.core.checkpoint import load_checkpoint
from utils.engine.config import TIME_LIMIT_EXIT

from conftest import TINY, run_script, tiny_trainer


def trainer(data, out, *extra):
    return tiny_trainer(out, data, "empssl", "free", "--resume", "auto", *extra,
                        defaults={"epochs": 2, "batch_size": 16}, subset=64, views=2)


def test_time_limit_stops_with_a_checkpoint_and_the_same_command_resumes(tmp_path, tiny_data):
    full = trainer(tiny_data, tmp_path / "full")
    full.run()
    cut = trainer(tiny_data, tmp_path / "cut", "--time-limit", "1e-6")
    with pytest.raises(SystemExit) as stop:
        cut.run()
    assert stop.value.code == TIME_LIMIT_EXIT
    saved = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert (saved["epoch"], saved["batch_in_epoch"]) == (0, 1)  # the first read-back point (every step on CPU)
    resumed = trainer(tiny_data, tmp_path / "cut", "--time-limit", "3600")
    assert resumed.cfg["time_limit"] == 3600
    resumed.run()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_a_resumed_run_does_not_inherit_the_time_limit(tmp_path, tiny_data):
    with pytest.raises(SystemExit) as stop:
        trainer(tiny_data, tmp_path, "--time-limit", "1e-6").run()
    assert stop.value.code == TIME_LIMIT_EXIT
    assert trainer(tiny_data, tmp_path).cfg["time_limit"] is None


def test_a_run_writing_to_a_file_says_where_it_is_at_start_and_every_few_seconds(tmp_path, tiny_data):
    proc = run_script("main_empssl_free_adv.py", "--data-dir", tiny_data, "--subset", 32, *TINY, "--num-views", 2,
                      "--replays", 2, "--knn-every", 0, "--out-dir", tmp_path, "--progress-seconds", "0.001")
    lines = proc.stdout.splitlines()
    assert str(tmp_path) in lines[0] and "cpu" in lines[0] and "2 epochs, 8 optimizer steps" in lines[0]
    progress = [line for line in lines if "run ETA" in line]
    assert progress and all(line.startswith("epoch ") and " step " in line for line in progress)
