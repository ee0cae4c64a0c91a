"""The ARM emulator: one simulated scale set behind the part of the Azure
Compute REST API that upgrade tools use, for the real Azure SDK and CLI.

Modules, by ARM resource:

* ``base``: constants, the HTTP-free :class:`Request` / :class:`Response`,
  :class:`ArmError`, the emulated scale set, JSON helpers;
* ``state``: the attributes every resource module shares, simulated time, the
  request log;
* ``operations``: long-running operations and the fault knobs (:class:`Faults`);
* ``rolling``: the platform's rolling upgrades;
* ``instances``: the scale set's virtualMachines and actions on them;
* ``scalesets``: the scale set resource (GET, PUT, PATCH, list, instance view);
* ``identity``: the managed-identity token endpoint and token checks;
* ``core``: :class:`ArmEmulator` (routing, dispatch) built from the above;
* ``server``: the HTTPS server (Starlette, uvicorn), ``launch``: start it as
  a process of its own. ``python -m vmss_rollout.emulator`` runs the server.

Importing this package needs SimPy only; ``server`` needs the emulator extra.
"""

from .base import ArmError, Request, Response, build_scale_set
from .core import ArmEmulator
from .operations import Faults

__all__ = ["ArmEmulator", "ArmError", "Faults", "Request", "Response", "build_scale_set"]
