"""The project's own multi-crop method: a standard EMP-SSL run (the teacher, --teacher) distilled into a robust
student under free adversarial perturbations of its 16 crops (DeACL's objective, free training). Defaults:
CF-AMC-SSL's settings (utils/engine/config.py, OWN_SCRIPTS); every one a flag (see --help)."""
from utils.engine.train import main

if __name__ == "__main__":
    main("empssl", "distill")
