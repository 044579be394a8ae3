"""Routers: one adapter per router kind behind the :class:`Router` interface."""
