"""The benchmarks run (at a tiny scale, on the CPU) so that they do not rot; no timing is asserted."""

from benchmarks import bench_eval, bench_step, bench_tcr, bench_train
from utils.train import entry_scripts

SCRIPTS = {key: script for key, (script, _) in entry_scripts().items()}


def test_bench_tcr(capsys):
    bench_tcr.main(["--views", "2", "--m", "8", "--d", "32", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "Gram m x m, batched" in out and "speed-up" in out


def test_bench_step(capsys, tmp_path):
    bench_step.main(["--width", "4", "--hidden-dim", "16", "--batch-size", "4", "--num-views", "2", "--repeats", "1",
                     "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    for row in ("model alone", "augmentation only", "standard, per optimizer step", "5-step PGD, isolated, per optimizer step",
                "m=3 free, per optimizer step"):
        assert row in out


def test_bench_train_covers_every_script(capsys, tmp_path):
    assert set(bench_train.script_rows()) == set(SCRIPTS.values())
    bench_train.main(["--device", "cpu", "--width", "4", "--hidden-dim", "16", "--batch-size", "4", "--num-views", "2",
                      "--steps", "1", "--warmup", "1", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert all(script in out for script in SCRIPTS.values())


def test_bench_eval(capsys):
    bench_eval.main(["--n", "12", "--batch-size", "5", "--steps", "1", "--width", "4", "--hidden-dim", "16",
                     "--device", "cpu"])
    assert "PGD-1" in capsys.readouterr().out


def test_bench_augment(capsys):
    from benchmarks import bench_augment

    bench_augment.main(["--images", "4", "--views", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "PIL reference" in out and "batched" in out
