"""The console's screens, one per module; each owns its workers and its key bindings."""
