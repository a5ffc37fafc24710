"""`python -m trainer ...` = the `train` command (what `torchrun -m trainer` runs on every rank)."""
from trainer.cli.main import main

main()
