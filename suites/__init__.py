"""The bundled compliance suite; collected by `pytest --base-image=IMG` when no test paths are given."""
