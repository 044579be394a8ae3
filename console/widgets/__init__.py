"""The console's widgets, one per module; they render data and post messages, never do I/O."""
