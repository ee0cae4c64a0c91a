"""``python -m vmss_rollout.emulator``: the ``vmss-rollout emulate`` command on its own."""

from ..cli.emulate import main

main()
