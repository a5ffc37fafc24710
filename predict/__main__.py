"""`python -m predict ...` = the `predict` command (what `torchrun -m predict segments` runs)."""
from predict.cli.main import main

main()
