"""Headless services of bgconsole: never imports textual, rich or the UI."""
