"""Run safety around the training loop: stop signals, periodic checkpoints, the training-time clock, the
non-finite-loss check and the progress bar, all decided at the loop's read-back points.

Losses stay on the device between read-backs; every ``log_every`` steps (and at an epoch's last step) the
guard reads them back once, and under DDP every rank reaches the same points, so the decisions to save or
stop are taken together.
"""
import os
import signal
import sys
import time

import torch
from tqdm import tqdm

from utils.core import distributed as dist
from utils.core.errors import UsageError


class NonFiniteLoss(UsageError):
    pass


# The stop reason of a run past its --time-limit (a signal's is its number).
TIME_LIMIT = "time limit"


class RunGuard:
    """``with RunGuard(...) as guard``: installs SIGINT/SIGTERM handlers (restored on exit).

    ``save(seconds)`` writes last.pt given the training seconds so far; ``stop(reason)`` exits the process
    after such a save (a signal number, or ``TIME_LIMIT`` once ``time.monotonic()`` passes ``deadline``);
    ``where()`` describes the position and the last good checkpoint for error messages.
    """

    def __init__(self, save, stop, where, term_names, *, log_every, checkpoint_minutes, seconds, device, is_main,
                 deadline=None, progress_seconds=60.0):
        self.save, self.stop, self.where, self.names = save, stop, where, list(term_names)
        self.log_every, self.save_interval = log_every, 60 * checkpoint_minutes
        self.banked, self.device, self.is_main = seconds, device, is_main
        self.deadline = deadline
        self.progress_seconds, self.last_line = progress_seconds, time.monotonic()
        self.signal = None
        self.last_save = self.since = time.monotonic()

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        if self.signal is not None:
            os._exit(128 + signum)
        self.signal = signum
        if self.is_main:
            print(f"\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint "
                  f"(send it again to exit at once)", file=sys.stderr)

    def seconds(self) -> float:
        """Training seconds of the whole run, this process's share included, saves excluded."""
        return self.banked + time.monotonic() - self.since

    def start_epoch(self, label, first_batch, total_batches, images_per_step, later_batches=0):
        """``later_batches``: the batches of the epochs after this one, for the whole run's ETA."""
        n = len(self.names)
        self.label, self.later = label, later_batches
        self.sums = torch.zeros(n, device=self.device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.bad_terms = torch.zeros(n, device=self.device)
        self.first, self.total, self.images_per_step = first_batch, total_batches, images_per_step
        self.epoch_seconds, self.epoch_since = 0.0, time.monotonic()
        self.bar = tqdm(total=total_batches, initial=first_batch, desc=label, leave=False, dynamic_ncols=True,
                        disable=None if self.is_main else True)

    def after_step(self, values, step, batch):
        """``values``: (terms,) this step's loss terms on the device; ``batch``: batches done this epoch."""
        self.sums += values
        newly_bad = ~torch.isfinite(values).all() & (self.bad_step < 0)
        self.bad_step = torch.where(newly_bad, step, self.bad_step)
        self.bad_terms = torch.where(newly_bad, values, self.bad_terms)
        self.bar.update(1)
        last = batch == self.total
        if (batch - self.first) % self.log_every and not last:
            return
        self._check_finite()
        done = batch - self.first
        loss, rate = self.sums[0].item() / done, done * self.images_per_step / self._epoch_elapsed()
        eta = self._epoch_elapsed() / done * (self.total - batch + self.later)
        self.bar.set_postfix(loss=f"{loss:.4g}", img_s=f"{rate:.0f}", run_eta=f"{eta / 60:.1f} min")
        self._progress_line(batch, loss, rate, eta)
        due = bool(self.save_interval) and time.monotonic() - self.last_save > self.save_interval
        stop, due = dist.any_true(self._asked_to_stop(), due and not last)
        if stop and not last:
            self.paused(self.save)
            self.stop(self.stop_reason())
        if due:
            self.paused(self.save)
            self.last_save = time.monotonic()

    def _progress_line(self, batch, loss, rate, eta):
        """Where the bar is hidden (output to a file or pipe), a line every ``progress_seconds``."""
        if not self.is_main or sys.stdout.isatty() or time.monotonic() - self.last_line < self.progress_seconds:
            return
        self.last_line = time.monotonic()
        print(f"{self.label} step {batch}/{self.total}  loss {loss:.4g}  {rate:.0f} img/s  run ETA {eta / 60:.1f} min",
              flush=True)

    def end_epoch(self) -> dict:
        """Mean of each term over the epoch's steps, the epoch's seconds and images/s."""
        self.bar.close()
        done = self.total - self.first
        seconds = self._epoch_elapsed()
        means = (self.sums / max(done, 1)).tolist()
        return {"done": done, "means": dict(zip(self.names, means)), "seconds": seconds,
                "images_per_s": done * self.images_per_step / max(seconds, 1e-9)}

    def stop_agreed(self) -> bool:
        """At an epoch's end, after its checkpoint: whether any rank was asked to stop (every rank learns it
        together); also restarts the periodic-save interval."""
        self.last_save = time.monotonic()
        return dist.any_true(self._asked_to_stop())[0]

    def _asked_to_stop(self) -> bool:
        return self.signal is not None or (self.deadline is not None and time.monotonic() > self.deadline)

    def stop_reason(self):
        """Why the ranks agreed to stop: this rank's signal, else its time limit, else another rank's signal."""
        if self.signal is not None:
            return self.signal
        return TIME_LIMIT if self.deadline is not None and time.monotonic() > self.deadline else signal.SIGTERM

    def _epoch_elapsed(self):
        return self.epoch_seconds + time.monotonic() - self.epoch_since

    def paused(self, action):
        """Runs ``action(seconds)`` with the clocks stopped (saving, monitoring: not training); returns its result."""
        now = time.monotonic()
        self.banked += now - self.since
        self.epoch_seconds += now - self.epoch_since
        result = action(self.banked)
        self.since = self.epoch_since = time.monotonic()
        return result

    def _check_finite(self):
        step = int(self.bad_step)
        if step < 0:
            return
        terms = ", ".join(f"{k}={v:.4g}" for k, v in zip(self.names, self.bad_terms.tolist()))
        raise NonFiniteLoss(f"the loss became non-finite at optimizer step {step} ({self.where()}): {terms}; "
                            f"try a lower --lr")
