"""Evaluation: the command line (evaluate), the protocols SLF, ALF and AFF (protocols), resumable fits
(progress) and the result files with their identity (results)."""
