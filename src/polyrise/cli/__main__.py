"""`python -m polyrise.cli`: what a run starts for each stage process (`polyrise.cli stage RUN_DIR NAME RESULT`)
and accelerate for each training worker."""

from polyrise.cli import main

main()
