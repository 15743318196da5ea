"""Integrations with other frameworks (each behind its own optional extra): :mod:`faceanalysis.integrations.ray`."""
