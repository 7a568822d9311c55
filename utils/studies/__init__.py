"""The studies layer: the ablation switches, each a flag and a mixin put in front of a registered method or
regime (the methods and regimes never branch on them)."""
