"""Governance gates: what a deployment must pass besides its own checks.
"""

from __future__ import annotations
