"""Corpora and the fixed calibration / evaluation split (torch only; tokenizers come from the model)."""

from fq_core.data.corpora import pydoc_text, read_text, tokenize
from fq_core.data.windows import calibration_windows, split_calibration_eval

__all__ = ["calibration_windows", "pydoc_text", "read_text", "split_calibration_eval", "tokenize"]
