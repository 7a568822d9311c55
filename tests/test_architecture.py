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


def branches(node) -> list:
    return [n for n in ast.walk(node) if isinstance(n, (ast.If, ast.IfExp))]


def test_each_pgd_kernel_and_the_original_step_hold_no_branch_for_another_step():
    kernels = {n.name: n for n in ast.parse((ROOT / "attacks" / "pgd.py").read_text()).body
               if isinstance(n, ast.FunctionDef)}
    assert not branches(kernels["pgd_linf"]) and not branches(kernels["pgd_linf_accumulating"])
    tree = ast.parse((ROOT / "utils" / "regimes" / "pgd_original.py").read_text())
    original = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "OriginalPGD")
    assert not branches(original)
    parts = {"accumulate", "move_stats", "own_target"}  # the ablation's switches, PartedPGD's alone
    assert not {n.attr for n in ast.walk(original) if isinstance(n, ast.Attribute)} & parts
    assert not class_attributes(ROOT / "utils" / "regimes" / "pgd_original.py") & parts


def test_the_trainer_is_the_loop_and_the_step_with_two_handles_to_the_encoder():
    tree = ast.parse((ROOT / "utils" / "engine" / "train.py").read_text())
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
                                 "from utils.engine.train import main; main('empssl', 'free')")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (run / "last.pt").is_file()
    argv = ["--checkpoint", str(run), "--data-dir", str(tiny_data), "--subset-train", "32", "--subset-test", "20",
            "--finetune-epochs", "1", "--autoattack", "--device", "cpu"]
    asked = without_autoattack(f"sys.argv = ['evaluate_empssl.py', *{argv!r}]; "
                               "from utils.evaluation.evaluate import main; main('empssl')")
    assert asked.returncode == 2 and len(asked.stderr.strip().splitlines()) == 1
    assert "pip install pyautoattack" in asked.stderr and not list(run.glob("eval-*.json"))


@pytest.mark.slow
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


# ----- the layers ------------------------------------------------------------------------------------------------
PROJECT = ("models", "losses", "attacks", "augment", "utils", "experiments", "benchmarks")
LAYERS = (("models", "losses", "attacks", "augment"), ("utils.core",), ("utils.methods", "utils.regimes"),
          ("utils.studies",), ("utils.engine",), ("utils.evaluation",), ("experiments",), ("utils",),
          ("benchmarks", "scripts"))  # utils: the command lines at its top; scripts: the eight entry scripts


def project_modules():
    """{dotted module name: path} of every project module outside tests/."""
    paths = [*ROOT.glob("*.py"), *(p for top in PROJECT for p in (ROOT / top).rglob("*.py"))]
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in paths
            if p.name != "conftest.py"}


def folder(module, modules):
    """The folder a module lies in: its package, ``scripts`` for the entry scripts at the top."""
    if modules[module].name == "__init__.py":
        return module
    return module.rpartition(".")[0] or "scripts"


def named(node, module, modules):
    """The project modules an import statement names, each the deepest one its dotted name reaches."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = module if modules[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        source = ".".join(filter(None, [base if node.level else "", node.module or ""]))
        names = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
    return {n for n in names if n in modules} - {module}


def entered(name, module, modules):
    """The packages whose __init__ Python runs before ``name`` when ``module`` imports it from outside them."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules
            and not (module + ".").startswith(".".join(parts[:i]) + ".")}


def import_graph():
    """({module: modules it runs by importing}, {module: modules its imports name},
    [(module, line) of project imports inside functions])."""
    modules, runs, names, inner = project_modules(), {}, {}, []
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        names[module] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names[module] |= named(node, module, modules)
        runs[module] = names[module].union(*(entered(n, module, modules) for n in names[module])) - {module}
        for func in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            inner += [(module, n.lineno) for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom))
                      and named(n, module, modules)]
    return modules, runs, names, inner


def a_cycle(graph):
    """One cycle of ``graph`` as a list of nodes, or None."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None

    return next((c for node in sorted(graph) if node not in state and (c := visit(node))), None)


def layer(name):
    return next(i for i, names in enumerate(LAYERS) if name in names)


def test_modules_and_folders_import_without_a_cycle_and_only_downwards():
    modules, runs, names, inner = import_graph()
    assert not inner, f"project imports inside functions: {inner}"
    assert a_cycle(runs) is None, " -> ".join(a_cycle(runs))
    folders = {}
    for module, targets in names.items():
        folders.setdefault(folder(module, modules), set()).update(folder(t, modules) for t in targets)
    folders = {f: targets - {f} for f, targets in folders.items()}
    assert a_cycle(folders) is None, " -> ".join(a_cycle(folders))
    upward = sorted((f, t) for f, targets in folders.items() for t in targets if layer(t) > layer(f))
    assert not upward, f"imports from a higher layer: {upward}"


def test_the_import_check_sees_a_cycle_an_upward_import_and_an_import_inside_a_function():
    assert a_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert a_cycle({"a": {"b"}, "b": set()}) is None
    assert layer("utils.core") < layer("utils.engine") < layer("experiments") < layer("utils")
    modules = {"utils.core.x": ROOT / "x.py", "utils.core": ROOT / "__init__.py", "utils": ROOT / "__init__.py"}
    node = ast.parse("from utils.core import x").body[0]
    assert named(node, "utils.core.y", {**modules, "utils.core.y": ROOT / "y.py"}) == {"utils.core.x"}
    assert named(ast.parse("from . import x").body[0], "utils.core.y", {**modules, "utils.core.y": ROOT}) == {
        "utils.core.x"}
    assert entered("utils.core.x", "elsewhere", modules) == {"utils", "utils.core"}
    assert entered("utils.core.x", "utils.core.y", modules) == set()


def test_the_original_pgd_step_is_pgds_registered_style_and_no_regime_of_its_own():
    from utils.regimes import REGIMES
    from utils.regimes.pgd import PGD
    from utils.regimes.pgd_original import OriginalPGD

    assert REGIMES.lookup("pgd", "original") is OriginalPGD and REGIMES.lookup("pgd", "isolated") is PGD
    assert REGIMES.lookup("free", "original") is REGIMES["free"] and list(REGIMES) == ["standard", "pgd", "free",
                                                                                       "distill"]
    with pytest.raises(ValueError, match="unknown regime 'original'"):
        REGIMES.lookup("original")
