"""`python -m rlhf.cli ...` is `rlhf ...` (for environments without the console script)."""

from rlhf.cli import main

main()
