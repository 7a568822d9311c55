"""The ablation plan: every entry's flags are accepted by its script, and the table reads each stage's files."""
import json

import pytest

from utils.ablate import ABLATIONS, ablate, build_parser, evaluations, table, train_argv
from utils.core.errors import UsageError
from utils.engine.train import parse_config
from utils.evaluation.evaluate import parse_args


def test_every_entry_parses_as_its_scripts_flags_with_the_small_scale_and_the_gain_term(tmp_path):
    args = build_parser().parse_args(["--out", str(tmp_path), "--data-dir", str(tmp_path)])
    for ab in ABLATIONS:
        cfg = parse_config(ab.method, ab.regime, None, train_argv(ab, args))[0]
        assert cfg["width"] == 8 and cfg["subset"] == 2000 and cfg["out_dir"].endswith(f"{ab.name}/train")
        assert cfg.get("attack_gain", False) == (ab.regime != "standard")
        for name, argv in evaluations(ab, args).items():
            assert parse_args(ab.method, argv).subset_test == 1000
        assert ("aa" in evaluations(ab, args)) == ab.aa
    assert len({ab.name for ab in ABLATIONS}) == len(ABLATIONS)
    epochs = {ab.name: parse_config(ab.method, ab.regime, None, train_argv(ab, args))[0]["epochs"] for ab in ABLATIONS}
    assert (epochs["pgd-isolated"], epochs["free"], epochs["simclr-pgd-isolated"]) == (3, 1, 50)
    assert epochs["free-4-views-4-epochs-clean-views-1-per-view-bn"] == 4


def fake_result(folder, **values):
    folder.mkdir(parents=True)
    (folder / "eval-slf-pre-v1-last.json").write_text(json.dumps(values))


def test_the_table_puts_each_stage_in_its_column_and_skips_entries_not_run(tmp_path):
    run = tmp_path / "free"
    (run / "train").mkdir(parents=True)
    rows = [{"epoch": 1, "attack_gain": 0.5, "knn": 20.0, "train_seconds": 60}, {"epoch": 2, "attack_gain": 0.25,
                                                                                "knn": 30.0, "train_seconds": 120}]
    (run / "train" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fake_result(run / "pgd", clean=40.0, pgd={"1/255": 30.0, "4/255": 12.0}, train_seconds=180)
    fake_result(run / "noise", clean=40.0, pgd={"8/255": 39.0})
    args = build_parser().parse_args(["--out", str(tmp_path)])
    text = table(args, ABLATIONS)
    line = next(row for row in text.splitlines() if row.startswith("| free |"))
    assert line.split(" | ")[2:] == ["0.500", "0.250", "30.0", "40.0", "39.0", "30.0", "12.0", "-", "3.0 |"]
    assert len(text.splitlines()) == 3  # header, rule, the one entry that ran


def test_an_unknown_entry_is_refused_in_one_line(tmp_path):
    with pytest.raises(UsageError, match="unknown ablation nope"):
        ablate(["--out", str(tmp_path), "--only", "nope", "--table"])


def test_recalibration_sets_the_statistics_to_the_clean_batches_and_writes_a_new_file(tmp_path, tiny_data):
    import torch

    from utils.core.checkpoint import load_checkpoint
    from utils.engine.blocks import encoder_for
    from utils.engine.train import Trainer
    from utils.recalibrate import recalibrate, recalibrate_bn

    from conftest import TINY

    model = encoder_for("simclr", width=4, hidden_dim=8)
    batches = [torch.rand(6, 3, 32, 32), torch.rand(10, 3, 32, 32)]
    with torch.no_grad():
        model.backbone.bn1.running_mean.fill_(5.0)
        recalibrate_bn(model.eval(), batches)
        batch_means = torch.stack([model.backbone.conv1(b).mean((0, 2, 3)) for b in batches])
    # every batch weighs the same, whatever its size
    torch.testing.assert_close(model.backbone.bn1.running_mean, batch_means.mean(0), rtol=1e-4, atol=1e-6)
    assert not model.training and model.backbone.bn1.momentum == 0.1

    cfg, given, _ = parse_config("empssl", "standard", {}, ["--data-dir", str(tiny_data), "--subset", "32",
                                                            "--num-views", "2", "--out-dir", str(tmp_path / "run"),
                                                            *TINY])
    Trainer(cfg, given).run()
    recalibrate([str(tmp_path / "run"), "--out", str(tmp_path / "recal.pt"), "--images", "32"])
    before, after = load_checkpoint(tmp_path / "run" / "last.pt"), load_checkpoint(tmp_path / "recal.pt")
    changed = {k for k in before["model"] if not torch.equal(before["model"][k], after["model"][k])}
    assert changed and all("running" in k or "num_batches" in k for k in changed)
    assert after["config"] == before["config"]
    with pytest.raises(UsageError, match="exists"):
        recalibrate([str(tmp_path / "run"), "--out", str(tmp_path / "recal.pt")])


@pytest.mark.parametrize("argv,sizes", [
    ([], [4]),
    (["--per-view-forward"], [1, 1, 1, 1]),
    (["--clean-views", "1", "--clean-apart"], [1, 3]),
    (["--clean-views", "1", "--clean-apart", "--per-view-forward"], [1, 1, 1, 1]),
])
def test_recalibration_forwards_the_clean_views_grouped_as_training_forwarded_them(argv, sizes):
    import torch

    from utils.recalibrate import clean_view_batches

    cfg = parse_config("empssl", "free", None, ["--num-views", "4", "--batch-size", "3", *argv])[0]
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    groups = list(clean_view_batches(cfg, images, seed=0))
    assert [len(g) // 3 for g in groups] == sizes * 2  # two batches of 3 images, in views of 3 rows
    per_batch = len(sizes)
    first = torch.cat(groups[:per_batch])
    again = torch.cat(list(clean_view_batches({**cfg, "clean_apart": False, "per_view_forward": False}, images, 0))[:1])
    torch.testing.assert_close(first, again)  # the same views, only grouped differently


@pytest.mark.parametrize("argv,words,alias", [
    ([], [], True),
    (["--clean-views", "4", "--per-view-forward"], ["4 clean views", "per-view BN"], False),
    (["--clean-weight", "0.5"], ["clean branch x0.5"], False),
])
def test_a_tables_name_shows_the_ablation_and_keeps_the_papers_name_for_the_papers_settings(argv, words, alias):
    from utils.report import model_name

    name = model_name({"train_config": parse_config("empssl", "free", None, argv)[0]})
    assert all(w in name for w in words) and name.endswith("= CF-AMC-SSL") == alias
    pgd = model_name({"train_config": parse_config("empssl", "pgd", None, ["--attack-bn", "eval"])[0]})
    assert "5-step PGD, original, eval-mode BN attack" in pgd
    assert "5-step PGD, isolated" in model_name({"train_config": {"method": "empssl", "regime": "pgd", "pgd_steps": 5}})


def test_the_projects_own_row_trains_its_flags_and_is_named_in_tables(tmp_path):
    from utils.report import model_name
    from utils.reproduce import SCALES, build_parser, select_rows
    from utils.reproduce import train_argv as row_argv

    row = next(r for r in select_rows(None) if r.variant == "anchored")
    assert row.key == "crop-empssl-free-anchored" and not row.optional

    args = build_parser().parse_args(["--data-dir", str(tmp_path), "--device", "cpu", "--out", str(tmp_path)])
    cfg = parse_config(row.method, row.regime, None, row_argv(row, SCALES["small"], args))[0]
    assert cfg["clean_views"] == 4 and cfg["per_view_forward"] and cfg["epochs"] == 1
    assert model_name({"train_config": cfg}).endswith("= Anchored CF-AMC-SSL (ours)")
    cfg["clean_views"] = 2
    assert "Anchored" not in model_name({"train_config": cfg}) and "CF-AMC-SSL" not in model_name({"train_config": cfg})
    small = next(r for r in select_rows(None) if r.variant == "anchored-b50-m4")
    cfg = parse_config(small.method, small.regime, None, row_argv(small, SCALES["small"], args))[0]
    assert (cfg["batch_size"], cfg["replays"]) == (50, 4)
    assert model_name({"train_config": cfg}).endswith("batch 50) = Anchored CF-AMC-SSL, batch 50, m=4 (ours)")


@pytest.mark.parametrize("argv,word", [(["--batch-size", "50"], "batch 50"), (["--replays", "4"], "m=4 free"),
                                       (["--alpha", "2/255"], "step 2/255")])
def test_the_papers_name_is_not_given_to_a_run_with_other_hyperparameters(argv, word):
    from utils.report import model_name

    assert model_name({"train_config": parse_config("empssl", "free", None, [])[0]}).endswith("= CF-AMC-SSL")
    name = model_name({"train_config": parse_config("empssl", "free", None, argv)[0]})
    assert word in name and "CF-AMC-SSL" not in name
