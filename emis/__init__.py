"""emis: find, measure and use the activation-space direction of emergent misalignment."""

__version__ = "0.1.0"
