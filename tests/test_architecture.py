"""The science in front: methods and regimes hold no experiment data, the ablations are one layer of data and
mixins, training needs no evaluation package, and a new ablation is a line of data that runs."""
import ast
import json
import subprocess
import sys

import pytest

from experiments.ablations import Ablation

from conftest import ROOT

EXPERIMENT_DATA = {"paper", "aliases", "own_rows", "scripts", "variants", "legacy", "baseline", "label",
                   "departures", "clean_passes"}


def class_attributes(path):
    """Every name a class in ``path`` assigns or defines."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                targets = item.targets if isinstance(item, ast.Assign) else [getattr(item, "target", None)]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
                names |= {item.name} if isinstance(item, ast.FunctionDef) else set()
    return names


@pytest.mark.parametrize("folder", ["methods", "regimes"])
def test_methods_and_regimes_hold_no_table_rows_variants_or_labels(folder):
    for path in sorted((ROOT / "utils" / folder).glob("*.py")):
        assert not class_attributes(path) & EXPERIMENT_DATA, path.name
        if folder == "methods":
            assert len(path.read_text().splitlines()) <= 60, path.name


def test_the_textbook_pgd_step_and_its_attack_fit_in_25_lines_without_a_branch():
    tree = ast.parse((ROOT / "utils" / "regimes" / "pgd.py").read_text())
    pgd = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PGD")
    methods = {n.name: n for n in pgd.body if isinstance(n, ast.FunctionDef)}
    lines = sum(methods[m].end_lineno - methods[m].lineno + 1 for m in ("step", "craft", "attack_mode"))
    assert lines <= 25
    assert not any(isinstance(n, (ast.If, ast.IfExp)) for m in ("step", "craft") for n in ast.walk(methods[m]))


def test_the_trainer_is_the_loop_and_the_step_with_two_handles_to_the_encoder():
    tree = ast.parse((ROOT / "utils" / "train.py").read_text())
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    assert trainer.end_lineno - trainer.lineno + 1 < 150
    handles = {t.attr for n in ast.walk(trainer) if isinstance(n, ast.Assign) for t in ast.walk(n)
               if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
               and t.attr in ("model", "net", "attack_net", "wrapped")}
    assert handles == {"model", "net"}


def without_autoattack(code):
    """Runs ``code`` in a fresh interpreter where importing pyautoattack fails, as where it is not installed."""
    prelude = "import sys; sys.modules['pyautoattack'] = None; sys.path.insert(0, %r); " % str(ROOT)
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_training_needs_no_autoattack_and_asking_for_it_without_the_package_is_one_line(tmp_path, tiny_data):
    run = tmp_path / "run"
    argv = ["--data-dir", str(tiny_data), "--subset", "32", "--width", "4", "--hidden-dim", "8", "--batch-size",
            "16", "--epochs", "1", "--num-views", "2", "--replays", "1", "--device", "cpu", "--knn-every", "0",
            "--out-dir", str(run)]
    trained = without_autoattack(f"sys.argv = ['main_empssl_free_adv.py', *{argv!r}]; "
                                 "from utils.train import main; main('empssl', 'free')")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (run / "last.pt").is_file()
    argv = ["--checkpoint", str(run), "--data-dir", str(tiny_data), "--subset-train", "32", "--subset-test", "20",
            "--finetune-epochs", "1", "--autoattack", "--device", "cpu"]
    asked = without_autoattack(f"sys.argv = ['evaluate_empssl.py', *{argv!r}]; "
                               "from utils.evaluate import main; main('empssl')")
    assert asked.returncode == 2 and len(asked.stderr.strip().splitlines()) == 1
    assert "pip install pyautoattack" in asked.stderr and not list(run.glob("eval-*.json"))


def test_a_new_ablation_written_as_data_runs_through_ablate_at_the_toy_scale(tmp_path, tiny_data, monkeypatch):
    import utils.ablate as ablate_module

    entry = Ablation("toy-free-clean-views-1-clean-branch", "empssl", "free", ("--clean-views", "1", "--clean-weight",
                                                                                "0.5"))
    monkeypatch.setattr(ablate_module, "ABLATIONS", (*ablate_module.ABLATIONS, entry))
    argv = ["--scale", "smoke", "--data-dir", str(tiny_data), "--out", str(tmp_path), "--only", entry.name]
    assert ablate_module.ablate(argv) == {}
    table = (tmp_path / "ablations.md").read_text().splitlines()
    line = next(row for row in table if row.startswith(f"| {entry.name} |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert "--clean-weight 0.5" in cells[1] and all(c != "-" for c in cells[2:6])  # gains, kNN, clean
    config = json.loads((tmp_path / entry.name / "train" / "config.json").read_text())
    assert (config["clean_views"], config["clean_weight"], config["attack_gain"]) == (1, 0.5, True)
