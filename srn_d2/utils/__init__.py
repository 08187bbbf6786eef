"""Helpers shared across srn_d2 that belong to no one component."""
