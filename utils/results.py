"""The name of an evaluation's result file and a result's training cost, the one place each is made."""


def result_name(protocol: str = "slf", features: str = "pre", test_views: int = 1, checkpoint: str = "last") -> str:
    """``eval-{protocol}-{features}-v{views}-{checkpoint stem}.json``: one file per (protocol, features, views,
    checkpoint), so that evaluations side by side never overwrite each other."""
    return f"eval-{protocol}-{features}-v{test_views}-{checkpoint}.json"


def training_seconds(result: dict):
    """Seconds of training behind an evaluated checkpoint: its run's, plus its teacher's when it was distilled
    from one (the ``teacher_identity`` its configuration records); None where unknown."""
    own = result.get("train_seconds")
    teacher = ((result.get("train_config") or {}).get("teacher_identity") or {}).get("train_seconds") or 0.0
    return None if own is None else own + teacher
