"""emis: find, measure and use the activation-space direction of emergent misalignment.

The Python API (`emis/api.py`): `emis.load_pair`, `emis.questions`, `emis.capture`, `emis.diff_in_means`,
`emis.separation`, `emis.steer`, `emis.transfer`, `emis.calibrate_monitor` / `emis.Monitor`, `emis.configure`.
The library modules are named for what they hold (`emis.activations`, `emis.separability`, `emis.steering`,
`emis.transfer_matrix`, ...); the Hydra stages live in `emis.stages`."""

__version__ = "0.1.0"

from emis.activations import ActivationSet  # noqa: E402  (the submodules read __version__ above)
from emis.api import (  # noqa: E402
    ModelPair, PairActivations, calibrate_monitor, capture, config, configure, load_pair, questions, separation, steer,
    transfer,
)
from emis.directions import DirectionSet, diff_in_means  # noqa: E402
from emis.monitor import Calibration, Monitor  # noqa: E402
from emis.schemas import register_schemas  # noqa: E402
from emis.separability import SeparationResult  # noqa: E402
from emis.steering import SteerResult  # noqa: E402
from emis.transfer_matrix import TransferResult  # noqa: E402

__all__ = ["ActivationSet", "Calibration", "DirectionSet", "ModelPair", "Monitor", "PairActivations", "SeparationResult",
           "SteerResult", "TransferResult", "calibrate_monitor", "capture", "config", "configure", "diff_in_means",
           "load_pair", "questions", "separation", "steer", "transfer"]

register_schemas()
