"""fq-calib: FlatQuant's layer-wise calibration, resumable, writing the shared checkpoint.

from fq_calib import calibrate, preset
calibrate(model, windows, preset("quickstart"), "out/ckpt", source="default")
"""

from importlib.metadata import version

from fq_calib.recipe import BITS_PRESETS, RECIPE_PRESETS, CalibRecipe, preset
from fq_calib.run import calibrate

__version__ = version("fq-calib")

__all__ = ["BITS_PRESETS", "RECIPE_PRESETS", "CalibRecipe", "calibrate", "preset"]
