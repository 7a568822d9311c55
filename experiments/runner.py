"""The one runner: a plan of rows -> commands -> results, shared by ``utils.reproduce``, ``utils.ablate`` and
``benchmarks.gpu_session`` (a ``BoxedPlan``: stages inside one budget of seconds).

A row trains through its entry script (``--resume auto``: an interrupted row continues) and is evaluated by
``evaluate_<method>.py`` into one or more folders. An evaluation is done when its result evaluated the bytes the
row's ``train/last.pt`` holds now; one that evaluated another state is reported, never replaced. A plan's folder
records its settings and each row's commands (``plan.json`` or the caller's name), so that a finished row of another
plan is never taken as done.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from utils.core.errors import UsageError
from utils.core.files import write_json
from utils.engine.config import script_of
from utils.evaluation.results import result_name

ROOT = Path(__file__).resolve().parents[1]
RESULT = result_name()  # the SLF result of the `pre` features, one view, of last.pt


class PastBox(Exception):
    """A command ran past its time box and was stopped."""


@dataclass
class Job:
    """One row of a plan: where it lives, how it trains, and its evaluations (sub-folder -> flags; "" the row's own
    folder). ``--checkpoint`` and ``--out`` are added by the runner."""

    folder: Path
    method: str
    regime: str
    train: list
    evaluations: dict = field(default_factory=dict)
    before: list = field(default_factory=list)  # (method, regime, flags) of runs trained first (a teacher), in order
    results: dict = field(default_factory=dict)  # sub-folder -> the name of its result file, where not RESULT

    @property
    def script(self) -> str:
        return script_of(self.method, self.regime)[0]

    @property
    def checkpoint(self) -> Path:
        return self.folder / "train" / "last.pt"

    def result(self, name) -> str:
        return self.results.get(name, RESULT)

    def eval_argv(self, name) -> list:
        return ["--checkpoint", str(self.checkpoint), "--out", str(self.folder / name), *self.evaluations[name]]


def run_command(argv, log, box=None) -> int:
    """``python argv`` from the project's root, its output appended to ``log``; its exit status. Ctrl-C reaches the
    child too and the child is waited for, so a training run saves before the command exits. Past ``box`` seconds
    (when given) the child's process group gets SIGTERM (a training run saves at its next read-back point), then
    SIGKILL, and ``PastBox`` is raised."""
    with open(log, "a") as fh:
        fh.write(f"$ python {' '.join(map(str, argv))}\n")
        fh.flush()
        proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, process_group=0 if box else None)
        grace = min(20.0, max(1.0, box / 10)) if box else 0
        try:
            return proc.wait(timeout=max(box - grace, 0.1) if box else None)
        except subprocess.TimeoutExpired:
            _stop_group(proc, grace)
            raise PastBox(f"past its time box of {box:.0f} s: stopped") from None
        except BaseException:
            if box:
                _stop_group(proc, grace)
            else:
                proc.wait()
            raise


def _stop_group(proc, grace):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def entry(script, call) -> list:
    """The entry script when the project has one, else the same call through ``python -c``."""
    return [f"{script}.py"] if (ROOT / f"{script}.py").is_file() else ["-c", f"import sys; {call}; sys.exit(0)"]


def file_sha1(path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_result(folder, name=RESULT):
    """The evaluation result ``name`` in ``folder``, or None."""
    path = Path(folder) / name
    return json.loads(path.read_text()) if path.is_file() else None


def evaluation_status(checkpoint: Path, folder: Path, name: str = RESULT) -> str:
    """'todo' (no result ``name`` in ``folder``), 'done' (it evaluated the bytes ``checkpoint`` holds now), or why
    it is neither."""
    result = read_result(folder, name)
    if result is None:
        return "todo"
    evaluated = (result.get("checkpoint_identity") or {}).get("sha1")
    if not evaluated or not checkpoint.is_file() or not file_sha1(checkpoint).startswith(evaluated):
        return (f"{folder / name} evaluated another checkpoint than {checkpoint}; move the result aside to "
                f"evaluate it again")
    return "done"


def run_job(job) -> str:
    """'done' (found finished, nothing run), 'ok', or what failed; output goes to the row's log.txt."""
    states = {name: evaluation_status(job.checkpoint, job.folder / name, job.result(name)) for name in job.evaluations}
    stale = [s for s in states.values() if s not in ("todo", "done")]
    if stale:
        return stale[0]
    if all(s == "done" for s in states.values()):
        return "done"
    job.folder.mkdir(parents=True, exist_ok=True)
    log = job.folder / "log.txt"
    for method, regime, flags in [*job.before, (job.method, job.regime, job.train)]:
        trainer = entry(script_of(method, regime)[0],
                        f"from utils.engine.train import main; main({method!r}, {regime!r})")
        if run_command([*trainer, *flags], log) != 0:
            return f"training ({method}, {regime}) failed (see {log})"
    evaluator = entry(f"evaluate_{job.method}", f"from utils.evaluation.evaluate import main; main({job.method!r})")
    for name, state in states.items():
        if state == "todo" and run_command([*evaluator, *job.eval_argv(name)], log) != 0:
            return f"evaluation {name or 'of the row'} failed (see {log})"
    return "ok"


def check_plan(path, plan: dict, jobs: dict) -> None:
    """One folder holds one plan: its settings (``plan``) and each row's commands (``jobs``: key -> Job), kept in
    ``path``. Rows are added to the record, never dropped; a row whose commands differ is refused, saying how."""
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    recorded = earlier.pop("rows", {})
    changed = {k: (earlier[k], v) for k, v in plan.items() if k in earlier and earlier[k] != v}
    if changed:
        diff = ", ".join(f"{k} {old} (now {new})" for k, (old, new) in changed.items())
        raise UsageError(f"{path.parent} holds rows of another plan ({diff}); its finished rows stay valid for that "
                         f"plan: rerun with those settings, or choose another --out")
    for key, job in jobs.items():
        now = {"train": job.train, "evaluate": [arg for name in job.evaluations for arg in job.eval_argv(name)]}
        if job.before:
            now["before"] = [list(stage) for stage in job.before]
        before = recorded.setdefault(key, now)
        parts = [part for part in now if before.get(part) != now[part]]
        if parts:
            raise UsageError(f"{job.folder} was run with other {parts[0]} arguments; its results stay valid for "
                             f"those: choose another --out, or move {job.folder} aside to run it again")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**plan, "rows": recorded})


def run_plan(rows: dict, costs: dict | None = None) -> dict:
    """Runs every row in order (``rows``: key -> a call that runs it and returns ``run_job``'s status), printing
    each row's start (with the time left, from ``costs``: key -> a unit of work) and its status; returns
    {key: why} for the rows that failed."""
    started, spent, failures = time.monotonic(), 0.0, {}
    keys = list(rows)
    for k, key in enumerate(keys):
        elapsed = time.monotonic() - started
        left = sum(costs[x] for x in keys[k:]) if costs else None
        remaining = f"{elapsed / spent * left / 60:.0f} min" if spent and elapsed > 1 and left else "unknown"
        print(f"row {k + 1}/{len(keys)} {key}: elapsed {elapsed / 60:.1f} min, estimated remaining {remaining}",
              flush=True)
        status = rows[key]()
        spent += costs[key] if costs and status == "ok" else 0  # rows found done took no time
        if status == "done":
            print(f"  {key}: done, skipped", flush=True)
        elif status != "ok":
            failures[key] = status
            print(f"  {key}: {status}", file=sys.stderr, flush=True)
    return failures


class Skip(Exception):
    """A stage that cannot run here; the message says why."""


def last_line(log) -> str:
    lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


class BoxedPlan:
    """Stages run in order inside one budget of seconds, each in a time box: at most its own seconds (``boxes``:
    name -> (most seconds or None for the time left, seconds kept for it while earlier stages run)), less the
    seconds kept for the later ones. A stage is a call (plan, box) -> result dict that raises ``Skip`` when it
    cannot run; one past its box (``PastBox``) is recorded as skipped, one that fails as failed, and the later
    stages still run. Every call of the same folder is appended to its session.json, rewritten after each stage;
    ``earlier`` finds a stage finished by an earlier call, for a stage to reuse."""

    def __init__(self, folder: Path, budget: float, boxes: dict, kind: str, argv: list):
        self.out, self.budget, self.boxes = Path(folder).resolve(), budget, boxes
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        path = self.out / "session.json"
        self.record = json.loads(path.read_text()) if path.is_file() else {"calls": []}
        if self.record.get("scale", kind) != kind:
            raise UsageError(f"{self.out} holds a {self.record['scale']} session; choose another --out")
        self.record["scale"] = kind
        self.call = {"call": len(self.record["calls"]) + 1, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "argv": argv, "budget_s": budget, "stages": []}
        self.record["calls"].append(self.call)
        self.results = {}

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.started)

    def run_all(self, stages: dict) -> list:
        """Runs ``stages`` (name -> call) in order; the records of the stages that failed."""
        names = list(stages)
        for k, name in enumerate(names):
            self.run_stage(name, stages[name], names[k + 1:])
        return [s for s in self.call["stages"] if s["status"] == "failed"]

    def run_stage(self, name, run, later):
        most, kept = self.boxes[name]
        box = self.left() - sum(self.boxes[s][1] for s in later)
        box = box if most is None else min(most, box)
        entry, started = {"stage": name, "box_s": round(box, 1)}, time.monotonic()
        try:
            if box < max(kept, 5):
                raise Skip(f"{max(box, 0):.0f} s left for it in the budget; it needs {max(kept, 5)}")
            entry.update(status="done", result=run(self, box))
            self.results[name] = entry["result"]
        except (Skip, PastBox) as e:
            entry.update(status="skipped", reason=str(e))
        except Exception as e:  # recorded, and the later stages still run
            entry.update(status="failed", reason=f"{type(e).__name__}: {e}"[:400])
        entry["seconds"] = round(time.monotonic() - started, 1)
        reason = f" ({entry['reason']})" if "reason" in entry else ""
        print(f"[{entry['seconds']:7.1f} s] {name}: {entry['status']}{reason}", flush=True)
        self.call["stages"].append(entry)
        self.save()

    def earlier(self, name, key=None):
        """The result of the stage in the latest earlier call that finished it (with the same ``key``)."""
        for call in reversed(self.record["calls"][:-1]):
            for s in call["stages"]:
                if s["stage"] == name and s["status"] == "done" and s["result"].get("key") == key:
                    return {**s["result"], "reused_from_call": call["call"]}
        return None

    def log(self, name) -> Path:
        return self.out / "logs" / f"{name}.log"

    def save(self):
        self.call["seconds"] = round(time.monotonic() - self.started, 1)
        write_json(self.out / "session.json", self.record)
