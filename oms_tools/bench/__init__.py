"""The benchmarks behind `oms bench …` (command.py wires them). Importing this package imports
nothing else, so the baseline workflow's module passes Temporal's workflow sandbox."""
