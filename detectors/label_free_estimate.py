"""Accuracy without labels: confidence-based performance estimation (CBPE), one estimator.

Labels arrive late; confidence arrives with every prediction. If the model's confidence is
calibrated (among predictions made with confidence ``c``, a share ``c`` is right) the expected
accuracy of a window is its mean calibrated confidence. Real models are rarely calibrated, so
:class:`ConfidenceCalibration` first learns ``P(correct | confidence bin)`` from the reference's
labelled predictions (the ``labelled_confidence`` and ``correct_confidence`` histograms the labels
consumer writes), by isotonic regression (``scipy.optimize.isotonic_regression``, weighted by the
labelled count of each bin, so the map is non-decreasing in confidence and noisy bins are pooled
with their neighbours). A window's estimate is then

    estimated accuracy = sum_b n_b * a_b / sum_b n_b

over the window's confidence histogram ``n_b`` of *all* predictions, labelled or not; for a
positive class the same sum over the predictions of that class estimates precision. The estimate
is only as good as the assumption that ``P(correct | confidence)`` did not change since the
reference: it follows a model whose confidence falls with its accuracy (the usual case of input
drift), not one that became confidently wrong (concept drift), which only labels reveal. That is
why it is exported *beside* the measured value.

Hyperparameters (public attributes, validated): ``minimum_labelled`` labelled reference
predictions in total, below which no calibration is made.

>>> calibration = ConfidenceCalibration([0, 10, 10, 10], [0, 2, 7, 6], minimum_labelled=30)
>>> [round(float(a), 3) for a in calibration.accuracy_by_bin]
[0.2, 0.2, 0.65, 0.65]
>>> round(calibration.estimate([0, 0, 5, 5]), 3), calibration.estimate([0, 0, 0, 0])
(0.65, nan)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.optimize import isotonic_regression

__all__ = ["CalibrationError", "ConfidenceCalibration"]

FloatArray = npt.NDArray[np.float64]


class CalibrationError(ValueError):
    """Reference data that cannot calibrate: the message says what is wrong with it."""


class ConfidenceCalibration:
    """``P(correct | confidence bin)`` learned from labelled reference predictions.

    Parameters
    ----------
    labelled, correct
        Per confidence bin (``floor(confidence * bins)``): labelled predictions and the correct
        ones among them.
    minimum_labelled
        Fewest labelled predictions (all bins together) worth calibrating on.
    """

    def __init__(
        self, labelled: Sequence[int], correct: Sequence[int], minimum_labelled: int = 100
    ) -> None:
        labelled_counts = np.asarray(labelled, dtype=np.float64)
        correct_counts = np.asarray(correct, dtype=np.float64)
        if labelled_counts.ndim != 1 or labelled_counts.shape != correct_counts.shape:
            raise CalibrationError(
                f"labelled and correct must be equally long lists, got {len(labelled)} and "
                f"{len(correct)}"
            )
        if len(labelled_counts) < 2:
            raise CalibrationError(f"need at least 2 confidence bins, got {len(labelled_counts)}")
        if (correct_counts < 0).any() or (correct_counts > labelled_counts).any():
            raise CalibrationError("correct counts must be between 0 and the labelled counts")
        if minimum_labelled < 1:
            raise CalibrationError(f"minimum_labelled must be >= 1, got {minimum_labelled!r}")
        if labelled_counts.sum() < minimum_labelled:
            raise CalibrationError(
                f"{int(labelled_counts.sum())} labelled predictions, fewer than the "
                f"{minimum_labelled} a calibration needs"
            )
        self.minimum_labelled = minimum_labelled
        self.labelled = labelled_counts
        self.correct = correct_counts
        has_data = labelled_counts > 0
        fitted = isotonic_regression(
            correct_counts[has_data] / labelled_counts[has_data],
            weights=labelled_counts[has_data],
            increasing=True,
        ).x
        bins = len(labelled_counts)
        centres = (np.arange(bins) + 0.5) / bins
        # Bins the reference never saw take the fitted value of their nearest neighbours.
        self.accuracy_by_bin: FloatArray = np.interp(centres, centres[has_data], fitted)

    @property
    def bins(self) -> int:
        return len(self.accuracy_by_bin)

    def expected_correct(self, counts: Sequence[int] | npt.NDArray[np.int64]) -> float:
        """Expected correct predictions among ``counts`` (per confidence bin)."""
        values = np.asarray(counts, dtype=np.float64)
        if values.shape != self.accuracy_by_bin.shape:
            raise CalibrationError(
                f"counts have {values.shape[0]} bins, the calibration {self.bins}"
            )
        return float(values @ self.accuracy_by_bin)

    def estimate(self, counts: Sequence[int] | npt.NDArray[np.int64]) -> float:
        """Estimated accuracy of the predictions counted in ``counts``; ``nan`` when empty."""
        total = float(np.sum(counts))
        return self.expected_correct(counts) / total if total > 0 else math.nan
