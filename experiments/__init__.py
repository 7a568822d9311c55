"""Experiments as data, and the one runner that turns a plan of rows into commands and results.

``paper`` holds the paper's rows and the project's own, ``ablations`` the ablation plan, ``scales`` the sizes a
plan runs at, ``labels`` the words that name a table row, ``runner`` and ``tables`` run a plan and write its table.
The training and evaluation engine never imports this package; ``utils.reproduce``, ``utils.ablate`` and
``utils.report`` are command lines over it.
"""
