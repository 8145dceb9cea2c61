"""Thresholds with one owner, used by the workflows, the command line and the figures."""

# Frankle et al. 2020: a pair of networks is stable (linearly connected) when the test
# error barrier between them is below 2 percentage points.
STABILITY_THRESHOLD = 0.02

# A pruned network is matching when its test accuracy is at least the dense one minus
# this (1 point; Frankle et al. use 0.2 points on larger test sets).
MATCHING_TOLERANCE = 0.01
