"""Training recipes (paper §3.1, 3.6-3.9, 4.2): pretrain.py and finetune.py, each a task
handed to the one loop (loop.py); runtime.py holds ranks, precision and the run directory."""
