"""The name of an evaluation's result file and a result's training cost, the one place each is made."""


def result_name(protocol: str = "slf", features: str = "pre", test_views: int = 1, checkpoint: str = "last",
                weights: str = "model", screen: bool = False, data: str = "") -> str:
    """``eval-{protocol}-{features}-v{views}-{checkpoint stem}[-ema][-screen]{data}.json``: one file per (protocol,
    features, views, checkpoint, its weights or their average, screening or not, the data of a transfer), so that
    evaluations side by side never overwrite each other."""
    return (f"eval-{protocol}-{features}-v{test_views}-{checkpoint}{'-ema' if weights == 'ema' else ''}"
            f"{'-screen' if screen else ''}{data}.json")


def training_seconds(result: dict):
    """Seconds of training behind an evaluated checkpoint: its run's, plus its teacher's when it was distilled
    from one (the ``teacher_identity`` its configuration records); None where unknown."""
    own = result.get("train_seconds")
    teacher = ((result.get("train_config") or {}).get("teacher_identity") or {}).get("train_seconds") or 0.0
    return None if own is None else own + teacher
