"""A small PyTorch reference of YOLOv9 / GELAN, used only as a benchmark and cross-check peer for gelan.c.

model.py: the YAML builder and every block with the official parameter names, fuse(), safetensors I/O.
loss.py:  the official TAL loss (single, dual and triple heads).
check_golden.py: verifies both against ../shared/golden. See docs/TORCHREF.md.
"""
