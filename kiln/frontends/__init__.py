"""Frontends: each turns a model from some source into a kiln.ir.Model."""
