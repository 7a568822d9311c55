"""One prepared call for a lent GPU: CF-AMC-SSL at full scale, trained, evaluated and timed inside a budget.

    python -m benchmarks.gpu_session --out DIR --budget SECONDS --data-archive FILE.tar.gz [--export FOLDER]
    python -m benchmarks.gpu_session --out DIR --smoke      # the same stages at toy size on the CPU (~2 min)
    python -m benchmarks.gpu_session --dry-run              # the stages, their time boxes, GPU seconds from FLOPs

Stages, in order, each inside a time box so that the whole ends inside --budget: the machine; the data
(unpacked from --data-archive, or --data/--data-dir); the suite's CUDA tests; a throughput probe of the
training step (``bench_train``, compile off and on); CF-AMC-SSL at the paper's settings (``main_empssl_free_adv.py``
with --time-limit and --resume auto) with the probe's faster setting; then the evaluations of whatever the run
reached (``evaluate_empssl.py``): SLF on the cached ``pre`` and ``backbone`` features with PGD-20 at 4/255 and
8/255 on the whole test set, AutoAttack at 8/255 on a stratified sample, and on a larger one while time remains.

After every stage DIR/session.json and DIR/session.md are rewritten (atomically), and copied with the training
metrics and each evaluation's JSON to --export, so a killed session still leaves what it did. A stage that
runs past its box is stopped and recorded as skipped. Calling the same command again with the same --out
resumes the training from its checkpoint, reuses finished stages, and appends a new call to session.json.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from experiments.paper import PAPER
from experiments.runner import BoxedPlan, PastBox, Skip, evaluation_status, file_sha1, last_line, run_command
from experiments.scales import Scale, scaled_train_flags
from experiments.tables import markdown_table
from utils.core.checkpoint import load_checkpoint
from utils.core.cli import positive_float, run_main, to_argv
from utils.core.data import DATASETS, load_dataset
from utils.core.files import machine, read_jsonl, write_text_atomic
from utils.engine.blocks import encoder_for
from utils.evaluation.results import result_name

METHOD, REGIME, SCRIPT = "empssl", "free", "main_empssl_free_adv"
TRAIN_EXITS = {0: True, 75: False}  # the trainer's exit status -> finished (75: stopped by --time-limit)


@dataclass(frozen=True)
class SessionPlan:
    scale: Scale  # the training run's and every evaluation's settings (experiments.scales)
    probe: dict  # settings of bench_train
    autoattack: int  # images of the first AutoAttack sample
    more: tuple  # larger AutoAttack samples, the largest that fits the time left
    boxes: dict  # stage -> (most seconds, seconds kept for it while earlier stages run)
    budget: float | None  # None: --budget must say (the machine's limit, in BENCHMARKS.md)
    compile_if_faster: bool  # probe with compile too, and train with it when the probe measured it faster


FULL = SessionPlan(Scale(1.0, {}, {"batch_size": 1000}, "the paper's settings, evaluated 1,000 images a batch"),
                   {"steps": 10, "warmup": 3}, 1000, (10_000, 5000, 2000),
                   {"machine": (15, 0), "data": (60, 0), "cuda_tests": (60, 0), "probe": (60, 0), "train": (None, 60),
                    "slf_pre": (120, 60), "slf_backbone": (90, 50), "autoattack": (180, 80),
                    "autoattack_more": (None, 0)},
                   None, True)
SMOKE = SessionPlan(Scale(1.0, dict(width=4, hidden_dim=16, subset=64, batch_size=16, num_views=2, replays=2,
                                    knn_train=64, knn_test=20, device="cpu"),
                          dict(subset_train=64, subset_test=20, finetune_epochs=1, pgd_steps=1, device="cpu"),
                          "a toy on the CPU: every stage runs", epochs=2),
                    dict(device="cpu", width=4, hidden_dim=16, batch_size=4, num_views=2, steps=1, warmup=1), 20, (),
                    # Three times what the stages take on an idle 2-core CPU: a test on a loaded machine must not
                    # hit them.
                    {"machine": (45, 0), "data": (90, 0), "cuda_tests": (90, 0), "probe": (120, 0),
                     "train": (180, 60), "slf_pre": (90, 45), "slf_backbone": (90, 45), "autoattack": (135, 60),
                     "autoattack_more": (None, 0)},
                    # A toy on the CPU: the probe's shapes differ from training's, so compiling would start over
                    # (and test_train checks the compiled path).
                    510, False)


class Session(BoxedPlan):
    """The stages of one call on the runner's ``BoxedPlan``; after each, session.md and the export too."""

    def __init__(self, args, plan):
        self.args, self.plan = args, plan
        super().__init__(args.out, args.budget or plan.budget, plan.boxes, "smoke" if args.smoke else "full",
                         args.argv)

    def run_all(self):
        return super().run_all(STAGES)

    def save(self):
        super().save()
        write_text_atomic(self.out / "session.md", render(self.record))
        if self.args.export:
            export(self, Path(self.args.export))


def export(session, folder):
    """Flat copies of what a caller takes away: the session, the training metrics, each evaluation of this call,
    and the tail of every stage's log, in one file."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"session.json": session.out / "session.json", "session.md": session.out / "session.md",
             "metrics.jsonl": session.out / "train" / "metrics.jsonl"}
    files.update({f"{name}.json": Path(r["json"]) for name, r in session.results.items() if "json" in r})
    for name, path in files.items():
        if path.is_file():
            shutil.copyfile(path, folder / name)
    tails = [f"== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
             for log in sorted((session.out / "logs").glob("*.log"))]
    write_text_atomic(folder / "logs.txt", "\n\n".join(tails) + "\n")


# ----- the stages: each takes (session, box seconds) and returns its result ----------------------------------
def stage_machine(session, box) -> dict:
    """GPU name and memory, driver and CUDA versions, torch version, CPU count."""
    info = {"torch": torch.__version__, "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "machine": machine("cuda" if torch.cuda.is_available() else "cpu")}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    driver=_driver_version())
    return info


def _driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no nvidia-smi)"
    return out.splitlines()[0] if out else "unknown"


def stage_data(session, box) -> dict:
    """The dataset's folder (unpacked from the archive once), decoded and cached for the later stages."""
    args = session.args
    data_dir = Path(args.data_dir) if args.data_dir else session.out / "data"
    if not args.data_dir and not (data_dir / "train").is_dir():
        with tarfile.open(args.data_archive) as tar:
            tar.extractall(data_dir, filter="data")
    train_x, _ = load_dataset(args.data, data_dir, train=True)
    test_x, test_y = load_dataset(args.data, data_dir, train=False)
    return {"data": args.data, "data_dir": str(data_dir.resolve()), "train_images": len(train_x),
            "test_images": len(test_x), "classes": int(test_y.max()) + 1}


def stage_cuda_tests(session, box) -> dict:
    """The suite's CUDA tests (pytest -m cuda)."""
    if not torch.cuda.is_available():
        raise Skip("no CUDA device here: the suite's CUDA tests need one")
    log = session.log("cuda_tests")
    code = run_command(["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"], log, box)
    if code not in (0, 5):  # 5: pytest found no test to run
        raise RuntimeError(f"the CUDA tests failed: {last_line(log)}")
    return {"summary": last_line(log)}


def stage_probe(session, box) -> dict:
    """Training steps/s of CF-AMC-SSL's step with compile off, then on, in the box's time; the faster wins."""
    earlier = session.earlier("probe")
    if earlier:
        return earlier
    result, deadline = {}, time.monotonic() + box
    modes = (("off", 0.4), ("on", 1.0)) if session.plan.compile_if_faster else (("off", 1.0),)
    for mode, share in modes:
        path = session.out / "logs" / f"probe-{mode}.json"
        try:
            code = run_command(["-m", "benchmarks.bench_train", "--scripts", SCRIPT, "--compile", mode, "--json", path,
                                "--out-dir", session.out / f"probe-run-{mode}", *to_argv(session.plan.probe)],
                               session.log(f"probe-{mode}"), share * (deadline - time.monotonic()))
            result[mode] = (json.loads(path.read_text())[0] if code == 0
                            else f"failed: {last_line(session.log(f'probe-{mode}'))}")
        except PastBox as e:
            result[mode] = str(e)
    measured = {mode: r for mode, r in result.items() if isinstance(r, dict)}
    if not measured:
        raise RuntimeError("no setting could be measured: " + "; ".join(f"{m} {r}" for m, r in result.items()))
    best = max(measured, key=lambda mode: measured[mode]["images_per_s"])
    return {**result, "compile": best == "on"}


def stage_train(session, box) -> dict:
    """CF-AMC-SSL trained against a deadline; a run that cannot finish saves there, and the next call resumes it."""
    run_dir, data = session.out / "train", session.results.get("data")
    if data is None:
        raise Skip("no data")
    done = training_state(run_dir)
    if done and done["finished"]:
        return session.earlier("train", done["key"]) or {**done, "reused_from_call": "?"}
    compile_model = session.plan.compile_if_faster and session.results.get("probe", {}).get("compile", False)
    grace = min(20.0, max(1.0, box / 10))
    # After the limit the trainer runs on to its next read-back point and saves: keep time for that.
    limit = max(box - grace - min(15.0, box / 4), 1.0)
    argv = [f"{SCRIPT}.py", "--data", data["data"], "--data-dir", data["data_dir"], "--out-dir", run_dir,
            "--resume", "auto", "--knn-every", "1", "--time-limit", f"{limit:.0f}",
            *scaled_train_flags(METHOD, REGIME, session.plan.scale)]
    code = run_command(argv + (["--compile"] if compile_model else []), session.log("train"), box)
    if code not in TRAIN_EXITS:
        raise RuntimeError(f"training exited with status {code}: {last_line(session.log('train'))}")
    device = "bf16, channels-last, CUDA" if torch.cuda.is_available() else "float32, CPU (layout: --channels-last auto)"
    return {**training_state(run_dir), "compile": compile_model, "device": device, "time_limit_s": round(limit)}


def training_state(run_dir) -> dict:
    """Where the run in ``run_dir`` stands (from its last.pt and metrics), or None before its first save."""
    if not (run_dir / "last.pt").is_file():
        return None
    ckpt = load_checkpoint(run_dir / "last.pt")
    rows = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    epochs = ckpt["config"]["epochs"]
    return {"epoch": ckpt["epoch"], "epochs": epochs, "batch_in_epoch": ckpt["batch_in_epoch"], "step": ckpt["step"],
            "finished": ckpt["epoch"] == epochs, "train_seconds": round(ckpt["train_seconds"], 1),
            "knn": [r.get("knn") for r in rows], "images_per_s": [r.get("images_per_s") for r in rows],
            "checkpoint": str(run_dir / "last.pt"), "key": file_sha1(run_dir / "last.pt")[:12]}


def evaluation(session, name, box, settings) -> dict:
    """``evaluate_empssl.py`` on the run's checkpoint with the stage's ``settings``, into a folder of its own per
    checkpoint (by the sha1 of its bytes, the runner's identity: a later checkpoint never replaces an earlier one's
    files); reused when that folder holds a result of those bytes."""
    train, data = session.results.get("train") or training_state(session.out / "train"), session.results.get("data")
    if train is None or data is None:
        raise Skip("no checkpoint to evaluate" if train is None else "no data")
    earlier = session.earlier(name, train["key"])
    if earlier and Path(earlier["json"]).is_file():
        return earlier
    folder = session.out / "eval" / train["key"] / name
    features = settings["features"]
    path = folder / result_name(features=features)
    status = evaluation_status(Path(train["checkpoint"]), folder, path.name)
    if status not in ("todo", "done"):
        raise RuntimeError(status)
    if status == "todo":  # else a call stopped between the evaluation's end and its record
        argv = [f"evaluate_{METHOD}.py", "--checkpoint", train["checkpoint"], "--data", data["data"], "--data-dir",
                data["data_dir"], "--protocol", "slf", "--no-train-augment", "--out", folder,
                *to_argv({**session.plan.scale.evaluate, **settings})]
        code = run_command(argv, session.log(name), box)
        if code != 0:
            raise RuntimeError(f"evaluation exited with status {code}: {last_line(session.log(name))}")
    r = json.loads(path.read_text())
    return {"key": train["key"], "json": str(path), "features": features, "clean": r["clean"], "pgd": r["pgd"],
            "n_test": r["n_test"], "n_train": r["n_train"], "autoattack": r.get("autoattack"),
            "autoattack_samples": r.get("autoattack_samples"), "stage_seconds": r["stage_seconds"],
            "finetune_epochs": r["settings"]["finetune_epochs"], "pgd_steps": r["settings"]["pgd_steps"],
            "seconds": r["seconds"]}


def stage_slf_pre(session, box):
    """SLF on the cached `pre` features (the paper's), then clean and PGD-20 at 4/255 and 8/255 on the test set."""
    return evaluation(session, "slf_pre", box, {"features": "pre", "eps": ("4/255", "8/255")})


def stage_slf_backbone(session, box):
    """The same on the 512-d `backbone` features (the RobustSSL leaderboard's)."""
    return evaluation(session, "slf_backbone", box, {"features": "backbone", "eps": ("4/255", "8/255")})


def stage_autoattack(session, box):
    """AutoAttack standard at 8/255 on a stratified sample of the test set (1,000 images)."""
    n = session.plan.autoattack
    return evaluation(session, "autoattack", box, autoattack_settings(n))


def autoattack_settings(n) -> dict:
    # The stratified test subset is AutoAttack's sample: PGD is measured on the same images.
    return {"features": "pre", "eps": "8/255", "autoattack": True, "subset_test": n}


def stage_autoattack_more(session, box):
    """AutoAttack on the largest sample that the time left allows, judged by the first sample's seconds."""
    first = session.results.get("autoattack")
    if first is None:
        raise Skip("the first AutoAttack sample did not finish")
    per_image = first["stage_seconds"]["autoattack"] / first["autoattack_samples"]
    fixed = first["seconds"] - first["stage_seconds"]["autoattack"]
    if not session.plan.more:
        raise Skip("this scale takes no larger sample")
    fits = [n for n in session.plan.more if n > first["autoattack_samples"] and fixed + 1.3 * per_image * n < box]
    if not fits:
        raise Skip(f"{box:.0f} s left; AutoAttack on {min(session.plan.more)} images would need about "
                   f"{fixed + 1.3 * per_image * min(session.plan.more):.0f} s")
    return evaluation(session, "autoattack_more", box, autoattack_settings(max(fits)))


STAGES = {"machine": stage_machine, "data": stage_data, "cuda_tests": stage_cuda_tests, "probe": stage_probe,
          "train": stage_train, "slf_pre": stage_slf_pre, "slf_backbone": stage_slf_backbone,
          "autoattack": stage_autoattack, "autoattack_more": stage_autoattack_more}


# ----- session.md -------------------------------------------------------------------------------------------
def paper_row():
    """(clean, PGD 4/255, PGD 8/255, minutes) of the paper's CF-AMC-SSL row."""
    row = next(r for r in PAPER if (r.method, r.preset, r.regime) == (METHOD, "crop", REGIME))
    return row.clean, row.pgd4, row.pgd8, row.minutes


def render(record) -> str:
    call = record["calls"][-1]
    done = {s["stage"]: s.get("result") for s in call["stages"] if s["status"] == "done"}
    lines = [f"# CF-AMC-SSL at {'full scale' if record['scale'] == 'full' else 'smoke scale (a toy, on the CPU)'}: "
             f"one GPU session", "", f"Call {call['call']} of this folder, started {call['started']}, budget "
             f"{call['budget_s']:.0f} s, {call.get('seconds', 0):.0f} s so far.", ""]
    if done.get("machine"):
        m = done["machine"]
        gpu = f"{m['gpu']}, {m['gpu_memory_gib']} GiB, driver {m['driver']}, CUDA {m['cuda']}; " if "gpu" in m else ""
        lines += [f"Machine: {gpu}{m['machine']}; {m['cpus']} CPUs.", ""]
    lines += results_table(done) + [""] + probe_lines(done.get("probe")) + stage_table(call)
    return "\n".join(lines) + "\n"


def results_table(done) -> list:
    clean, pgd4, pgd8, minutes = paper_row()
    train = done.get("train")
    when = (f"epoch {train['epoch']}/{train['epochs']}" + ("" if train["finished"] else
            f" + {train['batch_in_epoch']} steps (not finished)")) if train else "-"
    mins = f"{train['train_seconds'] / 60:.1f}" if train else "-"
    aa = done.get("autoattack_more") or done.get("autoattack")
    aa_cell = f"{aa['autoattack']['8/255']:.2f} (n={aa['autoattack_samples']})" if aa and aa.get("autoattack") else "-"
    knn = next((k for k in reversed(train["knn"]) if k is not None), None) if train else None
    body = []
    for name, label in (("slf_pre", "SLF, `pre` features"), ("slf_backbone", "SLF, `backbone` features")):
        r = done.get(name)
        cells = [f"{r['clean']:.2f}", f"{r['pgd']['4/255']:.2f}", f"{r['pgd']['8/255']:.2f}"] if r else ["-"] * 3
        body.append([f"CF-AMC-SSL, this session ({label})", *cells, aa_cell if name == "slf_pre" else "-",
                     "-" if knn is None else f"{knn:.1f}", mins, when])
    body.append(["CF-AMC-SSL, paper", clean, pgd4, pgd8, "-", "-", minutes, "10 epochs"])
    steps = (done.get("slf_pre") or {}).get("pgd_steps", 20)
    rows = markdown_table(["Model", "Clean", f"PGD-{steps} 4/255", f"PGD-{steps} 8/255", "AutoAttack 8/255", "kNN",
                           "Training (min)", "Trained"], body)
    slf = done.get("slf_pre") or {}
    n_test, epochs = slf.get("n_test", "-"), slf.get("finetune_epochs", "-")
    return rows + ["", f"SLF: {epochs} epochs on cached features of the training images, no augmentation; PGD-20 (step "
                   f"eps/4, random start) on {n_test} test images; AutoAttack standard on a stratified sample. "
                   f"Training minutes count training steps only (no start-up, kNN or saves)"
                   + (f"; compile {'on' if train['compile'] else 'off'} ({train['device']})." if train and
                      "device" in train else ".")]


def probe_lines(probe) -> list:
    if not probe:
        return []
    body = []
    for mode in ("off", "on"):
        m = probe.get(mode)
        if isinstance(m, dict):
            mfu = "-" if m["mfu"] is None else f"{100 * m['mfu']:.1f} % of {m['peak_tflops']:g}"
            body.append([f"compile {mode}", f"{m['images_per_s']:.0f}", f"{m['flop_per_s'] / 1e12:.1f}", mfu,
                         m["host_sync"]])
        else:
            body.append([f"compile {mode}", m])
    lines = markdown_table(["Throughput probe", "images/s", "TFLOP/s", "MFU (bf16 peak)", "host sync"], body)
    return lines + ["", f"The probe measured compile {'on' if probe['compile'] else 'off'} faster.", ""]


def stage_table(call) -> list:
    body = []
    for s in call["stages"]:
        reason = s.get("reason") or (f"reused from call {s['result']['reused_from_call']}"
                                     if s.get("result") and "reused_from_call" in s["result"] else "")
        body.append([s["stage"], f"{s['box_s']:.0f}", f"{s['seconds']:.1f}", s["status"], reason])
    return markdown_table(["Stage", "Box (s)", "Seconds", "Status", "Why"], body)


# ----- --dry-run ----------------------------------------------------------------------------------------------
def view_flops(width=64, hidden_dim=4096) -> float:
    """Forward + backward FLOPs of the encoder on one 32x32 view (counted by torch on two views, on the CPU)."""
    encoder = encoder_for(METHOD, width=width, hidden_dim=hidden_dim)
    with FlopCounterMode(display=False) as counter:
        encoder(torch.rand(2, 3, 32, 32)).sum().backward()
    return counter.get_total_flops() / 2


def print_plan(plan, budget, peak_tflops=989.0, mfu=0.4):
    given = "not given (--budget SECONDS sets it)" if budget is None else f"{budget:.0f} s"
    print(f"budget {given}; stages in order (box: most seconds; kept: seconds held back for it while "
          f"earlier stages run):")
    for name, (most, kept) in plan.boxes.items():
        print(f"  {name:16s} box {'the time left' if most is None else f'{most} s':>14s}   kept {kept:>3d} s   "
              f"{STAGES[name].__doc__.strip().splitlines()[0]}")
    flops = view_flops()
    train_passes = 10 * 50_000 * 16 * 3  # epochs x images x views x replays
    pgd_passes = 2 * (10_000 * 2 * 21 + 50_000 / 3)  # two feature kinds: PGD-20 at two radii, features once
    print(f"\nencoder forward + backward on one 32x32 view: {flops / 1e9:.2f} GFLOP")
    for label, passes in (("CF-AMC-SSL training, 10 epochs x 50,000 x 16 views x 3 replays", train_passes),
                          ("SLF features + PGD-20 at 4/255 and 8/255, pre and backbone", pgd_passes)):
        seconds = passes * flops / (peak_tflops * 1e12)
        print(f"  {label}: {passes / 1e6:.1f} M passes, {passes * flops / 1e15:.1f} PFLOP: {seconds:.0f} s at the "
              f"bf16 peak ({peak_tflops:g} TFLOP/s), {seconds / mfu:.0f} s at {100 * mfu:.0f} % of it")
    print("  AutoAttack: not estimated (its cost depends on how many images stay robust)")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_session", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="session folder (session.json, session.md, the run, evaluations, logs)")
    p.add_argument("--budget", type=positive_float, default=None,
                   help="seconds for all stages: the lent machine's limit less its start (BENCHMARKS.md gives it per "
                        "machine; --smoke: 510)")
    p.add_argument("--data", choices=DATASETS, default="imagefolder")
    p.add_argument("--data-dir", default=None,
                   help="an unpacked dataset (default: unpack --data-archive into OUT/data)")
    p.add_argument("--data-archive", default=None, help="a .tar.gz of train/<class>/* and test/<class>/*, unpacked "
                   "into OUT/data once")
    p.add_argument("--export", default=None, help="after every stage, copy the session's files here (flat)")
    p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU: checks that every stage runs")
    p.add_argument("--dry-run", action="store_true", help="print the stages, their boxes and GPU estimates")
    args = p.parse_args(argv)
    if not args.dry_run and not args.out:
        p.error("--out is required (a folder for the session)")
    if not args.smoke and not args.dry_run and args.budget is None:
        p.error("--budget SECONDS is required: the lent machine's limit less its start (BENCHMARKS.md)")
    if not args.dry_run and not args.data_dir and not (args.data_archive and Path(args.data_archive).is_file()):
        p.error(f"no data: {args.data_archive or 'no archive given'}; "
                "pass --data-archive FILE.tar.gz or --data-dir DIR")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv=None):
    args = parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    if args.dry_run:
        return print_plan(plan, args.budget or plan.budget)
    session = Session(args, plan)
    failed = session.run_all()
    print(f"wrote {session.out / 'session.md'}" + (f" and copies in {args.export}" if args.export else ""))
    return failed


if __name__ == "__main__":
    sys.exit(1 if run_main(main) else 0)
