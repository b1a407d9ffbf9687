"""Continual-learning methods: one file each, registered by name (see base.py for the hooks);
shared mechanisms in parts/."""

from clavs.methods.base import FAMILIES, Method, available_methods, get_method_class, register

__all__ = ["FAMILIES", "Method", "available_methods", "get_method_class", "register"]
