"""Patchbay: a self-hostable customer data platform compatible with mParticle's APIs."""

__version__ = "0.1.0"
