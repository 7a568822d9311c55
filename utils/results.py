"""The name of an evaluation's result file, the one place it is made."""


def result_name(protocol: str = "slf", features: str = "pre", test_views: int = 1, checkpoint: str = "last") -> str:
    """``eval-{protocol}-{features}-v{views}-{checkpoint stem}.json``: one file per (protocol, features, views,
    checkpoint), so that evaluations side by side never overwrite each other."""
    return f"eval-{protocol}-{features}-v{test_views}-{checkpoint}.json"
