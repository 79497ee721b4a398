"""Helpers shared by the tests (`from tests.helpers.X import ...`), and the fixtures behind the
`slurm`, `container` and `gpu` markers (registered for the whole tree by tests/conftest.py)."""
