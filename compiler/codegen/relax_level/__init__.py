"""Relax module rewrites: layout, Winograd, kernel merges (before and after legalization)."""
