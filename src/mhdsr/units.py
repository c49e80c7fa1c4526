"""Code units of the shearing box and the orbit, the time unit every report uses.

AthenaK's MRI runs use rho0 = cs = Omega = L = 1; one orbit is ``2 pi / Omega`` time units.
"""

from __future__ import annotations

import math


def orbits(time: float, omega0: float = 1.0) -> float:
    """Simulation time in orbits, ``time * omega0 / (2 pi)`` (``omega0`` from the run's deck)."""
    return float(time) * float(omega0) / (2.0 * math.pi)
