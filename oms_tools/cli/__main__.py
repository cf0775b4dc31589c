"""`python -m oms_tools.cli`, as the dev stack and the tests start its processes.

It exits the way the `oms` console script does (`run`): flushed, then at once, so the
interpreter's teardown never races the Temporal SDK's native threads."""

from oms_tools.cli import run

run()
