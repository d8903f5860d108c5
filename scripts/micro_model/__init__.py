"""The micro Make-Your-Video of docs/micro_model.md: its videos (data), network and training; run by
scripts/train_micro_model.py."""
