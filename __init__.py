"""vmss-rollout: simulate, compare and run rollouts on Azure Virtual Machine Scale Sets.

The repository's top-level folders (engine/, strategies/, sim/, backends/, cli/)
are the subpackages of this one import package; see pyproject.toml.
"""

__version__ = "0.1.0"
