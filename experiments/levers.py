"""The levers the adversarial-SSL literature reports, each a row of data on CF-AMC-SSL (crop EMP-SSL, free m=3):
trained as ``utils.reproduce`` trains CF-AMC-SSL at the chosen scale, plus the lever's flags, and screened
(``utils.levers``). Adding a lever or a combination is a line here."""
from dataclasses import dataclass

EMA = ("--ema-decay", "0.99")  # about a third of a medium run's 300 optimizer steps


@dataclass(frozen=True)
class Lever:
    name: str
    flags: tuple
    source: str  # where the field reports it
    ema: bool = False  # the run keeps a weight average (``EMA`` among its flags): screen it too


LEVERS = (
    Lever("baseline-ema", EMA, "CF-AMC-SSL itself; its weight average is the lever (supervised AT's SWA/EMA)", True),
    Lever("alpha-eps", ("--alpha", "eps"), "free AT's ascent step equal to the radius (Shafahi et al., 2019)"),
    Lever("weak-4", ("--weak-views", "4", *EMA), "4 of 16 views near-full and colourless (AdvCL, DeACL)", True),
    Lever("anneal-0", ("--view-strength-end", "0", *EMA), "augmentation annealed to none (DynACL)", True),
    Lever("anneal-0.5", ("--view-strength-end", "0.5", *EMA), "augmentation annealed to half strength (DynACL's "
          "schedule, stopped half-way)", True),
    Lever("anneal-0-alpha-eps", ("--view-strength-end", "0", "--alpha", "eps", *EMA),
          "annealed views with the free step equal to the radius", True),
    Lever("anneal-0.25", ("--view-strength-end", "0.25", *EMA), "augmentation annealed to a quarter strength: "
          "between none (robust, 5 clean points lost) and half (clean kept, little robustness)", True),
)
