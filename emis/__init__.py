"""emis: find, measure and use the activation-space direction of emergent misalignment.

The Python API (`emis/api.py`): `emis.load_pair`, `emis.questions`, `emis.capture`, `emis.diff_in_means`,
`emis.separation`, `emis.steer`, `emis.transfer`, `emis.calibrate_monitor` / `emis.Monitor`, `emis.configure`.
The library modules are named for what they hold (`emis.activations`, `emis.separability`, `emis.steering`,
`emis.transfer_matrix`, ...); the Hydra stages live in `emis.stages`.

The API's names load on first use (PEP 562), so `import emis` and an entry point's config check stay free of
nnsight, sklearn and the other heavy libraries; importing emis registers the config groups' schemas."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

from emis.schemas import register_schemas  # noqa: E402  (the submodules read __version__ above)

register_schemas()

# Each public name -> the module that defines it.
_HOMES = {
    "ActivationSet": "emis.activations",
    "Calibration": "emis.monitor",
    "DirectionSet": "emis.directions",
    "Monitor": "emis.monitor",
    "SeparationResult": "emis.separability",
    "SteerResult": "emis.steering",
    "TransferResult": "emis.transfer_matrix",
    "diff_in_means": "emis.directions",
    **dict.fromkeys(("ModelPair", "PairActivations", "calibrate_monitor", "capture", "config", "configure", "load_pair",
                     "questions", "separation", "steer", "transfer"), "emis.api"),
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """A public name, imported from its module the first time it is asked for (and kept); or a submodule not yet
    imported (`emis.api`, as when `import emis` imported them all)."""
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
