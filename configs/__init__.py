"""Training configs: `default` holds the shared recipe, the others import it and override fields.

Each file is loaded by path (`--config=configs/demo.py`); `from configs import default` finds
this package where the repository's root is importable: the working directory of
`python -m emohrnet_jax.main`, `pip install -e .`, or `PYTHONPATH`.
"""
