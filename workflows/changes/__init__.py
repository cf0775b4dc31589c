"""The bodies of the changes an order takes in flight (Temporal Updates), one module each.

Each takes `Steps` (`workflows/changes/steps.py`), the small interface to what a change may do:
run an activity, record progress, hold the order on a process exception, read and modify the
lifecycle's state. None imports the workflow class; the workflow declares the Updates, their
validators and the preview query, and delegates here. Everything here runs as workflow code:
deterministic, no I/O of its own, imported through the sandbox as the workflow's modules are.
"""
