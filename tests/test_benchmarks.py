"""The benchmarks run (at a tiny scale, on the CPU) so that they do not rot; no timing is asserted."""
import re

from benchmarks import bench_eval, bench_step, bench_tcr, bench_train
from utils.engine.config import entry_scripts

SCRIPTS = {key: script for key, (script, _) in entry_scripts().items()}


def test_bench_tcr(capsys):
    bench_tcr.main(["--views", "2", "--m", "8", "--d", "32", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "Gram m x m, batched" in out and "speed-up" in out


def test_bench_step(capsys, tmp_path):
    bench_step.main(["--width", "4", "--hidden-dim", "16", "--batch-size", "4", "--num-views", "2", "--repeats", "1",
                     "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    for row in ("model alone", "augmentation only", "standard, per optimizer step",
                "5-step PGD, isolated, per optimizer step", "m=3 free, per optimizer step"):
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


def test_bench_variants_projects_each_runs_minutes_from_its_minibatches(capsys, tmp_path):
    from benchmarks import bench_variants

    toy = "--width 4 --hidden-dim 16 --batch-size 8"
    minutes = bench_variants.main(["--config", f"main_empssl_free_adv {toy} --num-views 2",
                                   "--config", f"main_empssl_free_adv {toy} --num-views 2 --clean-weight 1",
                                   "--config", f"main_simclr_free_adv {toy}", "--rounds", "1",
                                   "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if "main_" in line]
    # 2,000 images in minibatches of 8: 250 per epoch; the free EMP-SSL row has 1 epoch, the SimCLR one 17
    assert [r[2] for r in rows] == ["250", "250", str(250 * 17)]
    assert len(minutes) == 3 and rows[0][4] == "1.00x"
    assert [r[4] for r in rows[1:]] == [f"{m / minutes[0]:.2f}x" for m in minutes[1:]]


def test_bench_cpu_path_times_every_layout_and_precision(capsys, tmp_path):
    from benchmarks import bench_cpu_path

    # width 8: the smoke scale's 4 is below what the CPU's channels-last kernels take
    results = bench_cpu_path.main(["--scales", "smoke", "--width", "8", "--batch-size", "10", "--test-images", "10",
                                   "--repeats", "1", "--out-dir", str(tmp_path)])
    steps, attacks = results["seconds_per_step"]["smoke"], results["seconds_per_attack_pass"]["smoke"]
    assert set(steps) == set(bench_cpu_path.SETTINGS) and all(s > 0 for s in steps.values())
    assert len(attacks) == 2 and all(s > 0 for s in attacks.values())
    assert "Attack pass" in capsys.readouterr().out
