"""emis: find, measure and use the activation-space direction of emergent misalignment.

The Python API (`emis/api.py`): `emis.load_pair`, `emis.questions`, `emis.capture`, `emis.diff_in_means`,
`emis.separation`, `emis.steer`, `emis.configure`. Where an API function shares a name with a library module
(`capture`, `separation`, `steer`), `emis.<name>` is the function; the module stays importable by its path
(`from emis.capture import capture_residuals`)."""

__version__ = "0.1.0"

from emis.api import (  # noqa: E402  (the submodules read __version__ above)
    ModelPair, PairActivations, capture, config, configure, load_pair, questions, separation, steer,
)
from emis.capture import ActivationSet  # noqa: E402
from emis.directions import DirectionSet, diff_in_means  # noqa: E402
from emis.separation import SeparationResult  # noqa: E402
from emis.steer import SteerResult  # noqa: E402

__all__ = ["ActivationSet", "DirectionSet", "ModelPair", "PairActivations", "SeparationResult", "SteerResult", "capture",
           "config", "configure", "diff_in_means", "load_pair", "questions", "separation", "steer"]
