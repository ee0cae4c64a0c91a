"""Real backends. ``azure`` needs the optional dependencies
(``pip install 'vmss-rollout[azure]'``); ``realtime`` is the wall-clock driver."""
