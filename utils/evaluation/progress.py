"""The finished stages of an interrupted evaluation: kept beside its result's name on Ctrl-C, picked up by the
same command run again (same settings, same checkpoint bytes), removed once the evaluation completes."""
import json
from pathlib import Path

from utils.core.checkpoint import load_checkpoint
from utils.core.files import plain, write_json


class Progress:
    """``done``: what has finished: ``fitted`` (the head, and for aff the encoder, in ``partial-NAME.pt``), ``pgd``
    (clean and PGD accuracies), ``autoattack`` ({eps: its result}); ``stage_seconds`` of each."""

    def __init__(self, json_path: Path, settings: dict, identity: dict):
        self.json = json_path.with_name(f"partial-{json_path.name}")
        self.pt = self.json.with_suffix(".pt")
        self.key = {"settings": json.loads(json.dumps(plain(settings))), "checkpoint_identity": identity}
        earlier = json.loads(self.json.read_text()) if self.json.is_file() else {}
        same = {k: earlier.get(k) for k in self.key} == self.key and self.pt.is_file()
        self.done = earlier.get("done", {}) if same else {}
        self.stage_seconds = earlier.get("stage_seconds", {}) if same else {}

    def fitted_state(self):
        """The fitted head (and encoder) of an earlier call, or None."""
        return load_checkpoint(self.pt) if self.done.get("fitted") else None

    def keep(self, save_fitted) -> str:
        """Writes what has finished (``save_fitted(path)`` writes the fitted model); returns what was kept, in words."""
        if not self.done.get("fitted"):
            return "nothing had finished yet (the fine-tuning was under way)"
        save_fitted(self.pt)
        write_json(self.json, {**self.key, "done": self.done, "stage_seconds": self.stage_seconds})
        parts = ["the fitted head" + (" and encoder" if "encoder" in load_checkpoint(self.pt) else "")]
        parts += ["clean and PGD accuracies"] if "pgd" in self.done else []
        parts += [f"AutoAttack at {', '.join(self.done['autoattack'])}"] if self.done.get("autoattack") else []
        return f"kept {' and '.join(parts)} in {self.json.name} and {self.pt.name}"

    def clear(self) -> None:
        self.json.unlink(missing_ok=True)
        self.pt.unlink(missing_ok=True)
