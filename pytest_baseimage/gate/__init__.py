"""The admission gate as a service: certify on push, promote what passes, answer Harbor (issue 17).

Pytest-free: the service runs the plugin in a subprocess per job (worker.py), so the verdict and the reports
are the plugin's own.
"""
