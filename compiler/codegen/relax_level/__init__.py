"""Relax module rewrites: channels-last layout (layout, unstack), weights folded by numpy
(fold_numpy), Winograd (winograd), and the kernel merges after legalization (merge_chains,
merge_moves); rewrite.py holds what they share."""
