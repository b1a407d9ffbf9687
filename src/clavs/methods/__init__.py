"""Continual-learning methods: one file each, registered by name (see base.py for the hooks)."""

from clavs.methods.base import Method, available_methods, get_method_class, register

__all__ = ["Method", "available_methods", "get_method_class", "register"]
